"""Frames: round trip, and every way a frame can be refused (FrameError)."""

from __future__ import annotations

import ml_dtypes
import msgpack
import numpy as np
import pytest

from sn40l_emu.errors import FrameError
from sn40l_emu.p2p.frame import MAX_CHUNKS, decode_frame, encode_frame
from sn40l_emu.p2p.transport import SymbolicTensor

MAX = 1 << 20
ARRIVE = np.array([10, 20, 20], dtype=np.int64)


def _header(**changes: object) -> bytes:
    good, _ = encode_frame(1, 2, 7, 3, np.zeros(6, np.float32), ARRIVE)
    obj = msgpack.unpackb(good)
    obj.update(changes)
    return msgpack.packb({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int64, np.int32])
def test_round_trip_every_allowed_dtype(dtype: type) -> None:
    data: np.ndarray = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    header, payload = encode_frame(1, 2, 7, 3, data, ARRIVE)
    assert isinstance(header, bytes) and payload is not None and payload.ndim == 1
    frame = decode_frame(header, payload.copy(), MAX)
    assert (frame.src, frame.dst, frame.tag, frame.seq) == (1, 2, 7, 3)
    assert frame.shape == (3, 4) and frame.chunks == 3 and not frame.symbolic
    np.testing.assert_array_equal(frame.arrive_ns, ARRIVE)
    got = frame.tensor()
    assert isinstance(got, np.ndarray) and got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)
    assert not got.flags.writeable


def test_symbolic_round_trip_has_no_payload() -> None:
    sym = SymbolicTensor((1 << 20, 4096), "bfloat16")  # 8 GiB that never exists
    header, payload = encode_frame(0, 1, 0, 0, sym, np.array([5], np.int64))
    assert payload is None
    frame = decode_frame(header, None, 4096)
    assert frame.symbolic and frame.tensor() == sym and frame.payload_bytes == sym.nbytes


def test_decode_does_not_change_callers_flags() -> None:
    header, payload = encode_frame(0, 1, 0, 0, np.ones(4, np.float32), ARRIVE[:1])
    assert payload is not None
    decode_frame(header, payload, MAX)
    assert payload.flags.writeable


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("not bytes", "must be bytes"),
        (b"", "not a valid msgpack"),
        (b"\xc1\xc1\xc1", "not a valid msgpack"),
        (b"\x93\x01\x02", "not a valid msgpack"),  # truncated array
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"a": 1}) + b"\x00", "not a valid msgpack"),  # trailing bytes
    ],
)
def test_garbage_and_truncated_headers(header: object, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        decode_frame(header, np.zeros(6, np.float32), MAX)  # type: ignore[arg-type]


def test_truncated_real_header() -> None:
    header, payload = encode_frame(1, 2, 7, 3, np.zeros(6, np.float32), ARRIVE)
    for cut in (1, len(header) // 2, len(header) - 1):
        with pytest.raises(FrameError, match="not a valid msgpack"):
            decode_frame(header[:cut], payload, MAX)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"version": 2}, "unknown frame version"),
        ({"seq": ...}, "missing \\['seq'\\]"),
        ({"extra": 1}, "unexpected \\['extra'\\]"),
        ({"src": "1"}, "'src' must be an int"),
        ({"tag": -1}, "'tag' must be an int"),
        ({"seq": True}, "'seq' must be an int"),
        ({"dst": 1.0}, "'dst' must be an int"),
        ({"dtype": "float64"}, "not allowed"),
        ({"dtype": "object"}, "not allowed"),
        ({"dtype": 5}, "not allowed"),
        ({"shape": [7]}, "payload_bytes"),
        ({"shape": "6"}, "shape must be a list"),
        ({"shape": [1] * 33}, "shape must be a list"),
        ({"payload_bytes": 25}, "payload_bytes"),
        ({"symbolic": 0}, "must be a bool"),
        ({"symbolic": True}, "must not carry a payload"),
        ({"chunks": 2}, "3 entries for 2 chunks"),
        ({"chunks": 0, "arrive_ns": []}, "need >= 1"),
        ({"arrive_ns": [10, 5, 20]}, "non-decreasing"),
        ({"arrive_ns": [10, 2.5, 20]}, "'arrive_ns' must be an int"),
        ({"arrive_ns": 3}, "must be a list"),
    ],
)
def test_bad_header_fields(changes: dict[str, object], match: str) -> None:
    with pytest.raises(FrameError, match=match):
        decode_frame(_header(**changes), np.zeros(6, np.float32), MAX)


def test_payload_mismatches() -> None:
    header, _ = encode_frame(1, 2, 7, 3, np.zeros(6, np.float32), ARRIVE)
    with pytest.raises(FrameError, match="payload dtype float16 != header dtype float32"):
        decode_frame(header, np.zeros(6, np.float16), MAX)
    with pytest.raises(FrameError, match="payload dtype"):
        decode_frame(header, np.zeros(6, ">f4"), MAX)  # wrong byte order
    with pytest.raises(FrameError, match="payload has 28 B, header says 24 B"):
        decode_frame(header, np.zeros(7, np.float32), MAX)
    with pytest.raises(FrameError, match="must be a numpy array"):
        decode_frame(header, None, MAX)
    with pytest.raises(FrameError, match="must be a numpy array"):
        decode_frame(header, [0.0] * 6, MAX)  # type: ignore[arg-type]


def test_frame_over_max_bytes() -> None:
    header, payload = encode_frame(1, 2, 7, 3, np.zeros(1000, np.float32), ARRIVE)
    decode_frame(header, payload, len(header) + 4000)
    with pytest.raises(FrameError, match="exceeds max_frame_bytes"):
        decode_frame(header, payload, len(header) + 3999)
    with pytest.raises(FrameError, match=r"header of .* exceeds the limit"):
        decode_frame(header, payload, len(header) - 1)


def test_oversized_containers_rejected_before_allocation() -> None:
    huge_list = msgpack.packb({"arrive_ns": list(range(MAX_CHUNKS + 1))})
    with pytest.raises(FrameError, match="not a valid msgpack"):
        decode_frame(huge_list, None, 1 << 24)
    long_str = msgpack.packb({"dtype": "x" * 1000})
    with pytest.raises(FrameError, match="not a valid msgpack"):
        decode_frame(long_str, None, MAX)
    binary = msgpack.packb({"dtype": b"float32"}, use_bin_type=True)
    with pytest.raises(FrameError, match="not a valid msgpack"):
        decode_frame(binary, None, MAX)
    # a header claiming a 2**32-element array in 5 bytes
    with pytest.raises(FrameError, match="not a valid msgpack"):
        decode_frame(b"\xdd\xff\xff\xff\xff", None, MAX)


def test_encode_refuses_disallowed_dtype() -> None:
    with pytest.raises(FrameError, match="not allowed"):
        encode_frame(0, 1, 0, 0, np.zeros(3, np.float64), ARRIVE[:1])
    with pytest.raises(FrameError, match="not allowed"):
        encode_frame(0, 1, 0, 0, SymbolicTensor((3,), "float64"), ARRIVE[:1])
