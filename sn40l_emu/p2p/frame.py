"""P2P frames: a small msgpack header plus a numpy payload carried beside it.

Why this shape: the header is the only part that is parsed from bytes, so it
is small, schema-checked and bounded before anything is allocated; the payload
never goes through msgpack or pickle of ours (Ray moves numpy arrays with its
own zero-copy path, the in-process transport hands over a read-only copy).
A symbolic frame (timing mode) carries no payload at all, only the shape and
dtype it stands for, so a full-size model's activations never exist.

The header also carries the per-chunk arrival times computed by the sender's
network view (:mod:`sn40l_emu.fabric.network`): the receiver only has to take the
maximum with its own clock, which keeps timing independent of wall-clock order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import msgpack
import numpy as np

from sn40l_emu.errors import FrameError
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor
from sn40l_emu.program import np_dtype

FRAME_VERSION = 1

#: dtypes a frame may carry; anything else (object arrays above all) is refused.
ALLOWED_DTYPES: frozenset[str] = frozenset({"float32", "float16", "bfloat16", "int64", "int32"})

#: Upper bounds checked while unpacking, so a hostile header cannot make us allocate.
MAX_HEADER_BYTES = 1 << 20  # 1 MiB: room for MAX_CHUNKS arrival times (~9 B each)
MAX_CHUNKS = 1 << 16
MAX_NDIM = 32
_MAX_STR_LEN = 64
_MAX_MAP_LEN = 16
_INT64_MAX = (1 << 63) - 1

_INT_KEYS = ("version", "src", "dst", "tag", "seq", "payload_bytes", "chunks")
_KEYS = frozenset((*_INT_KEYS, "dtype", "shape", "symbolic", "arrive_ns"))


@dataclass(frozen=True, eq=False)
class Frame:
    """A validated frame. ``payload`` is a read-only array of ``shape`` or None (symbolic)."""

    src: int
    dst: int
    tag: int
    seq: int
    dtype: str
    shape: tuple[int, ...]
    payload_bytes: int
    symbolic: bool
    arrive_ns: np.ndarray  # int64, one per chunk, non-decreasing
    payload: np.ndarray | None

    @property
    def chunks(self) -> int:
        return int(self.arrive_ns.shape[0])

    def tensor(self) -> Tensor:
        """The payload as the transports hand it to a collective."""
        if self.payload is None:
            return SymbolicTensor(self.shape, self.dtype)
        return self.payload


@cache
def allowed_dtype(name: str) -> np.dtype:
    """numpy dtype of an allow-listed name (memoised: this is on every frame's path)."""
    return np_dtype(name)


@cache
def _names() -> dict[np.dtype, str]:
    return {allowed_dtype(n): n for n in ALLOWED_DTYPES}


def dtype_name(dtype: np.dtype) -> str:
    """Allow-listed name of a numpy dtype (native byte order only)."""
    name = _names().get(dtype)
    if name is None:
        raise FrameError(f"dtype {dtype!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    return name


def encode_frame(
    src: int, dst: int, tag: int, seq: int, payload: Tensor, arrive_ns: np.ndarray
) -> tuple[bytes, np.ndarray | None]:
    """Header bytes and the payload array to pass beside them (None when symbolic).

    The array returned is C-contiguous and flat; the header carries the shape.
    It may share memory with ``payload``: a transport that hands it to another
    rank in the same process must copy it (see :mod:`sn40l_emu.p2p.inproc`).
    """
    arrive = [int(x) for x in np.asarray(arrive_ns, dtype=np.int64).reshape(-1)]
    if isinstance(payload, SymbolicTensor):
        if payload.dtype not in ALLOWED_DTYPES:
            raise FrameError(f"dtype {payload.dtype!r} is not allowed")
        name, shape, nbytes, flat = payload.dtype, payload.shape, payload.nbytes, None
    else:
        name = dtype_name(payload.dtype)
        shape = tuple(int(d) for d in payload.shape)
        flat = np.ascontiguousarray(payload).reshape(-1)
        nbytes = int(flat.nbytes)
    header = {
        "version": FRAME_VERSION,
        "src": int(src),
        "dst": int(dst),
        "tag": int(tag),
        "seq": int(seq),
        "dtype": name,
        "shape": [int(d) for d in shape],
        "payload_bytes": nbytes,
        "symbolic": flat is None,
        "chunks": len(arrive),
        "arrive_ns": arrive,
    }
    return msgpack.packb(header, use_bin_type=True), flat


def _unpack(header: bytes, max_frame_bytes: int) -> dict[str, Any]:
    if not isinstance(header, (bytes, bytearray, memoryview)):
        raise FrameError(f"header must be bytes, got {type(header).__name__}")
    limit = min(MAX_HEADER_BYTES, max_frame_bytes)
    if len(header) > limit:
        raise FrameError(f"header of {len(header)} B exceeds the limit of {limit} B")
    try:
        obj = msgpack.unpackb(
            header,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=_MAX_STR_LEN,
            max_bin_len=0,
            max_array_len=MAX_CHUNKS,
            max_map_len=_MAX_MAP_LEN,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise FrameError(f"header is not a valid msgpack frame header: {exc}") from exc
    if not isinstance(obj, dict):
        raise FrameError(f"header must be a map, got {type(obj).__name__}")
    keys = set(obj)
    if keys != _KEYS:
        missing, extra = sorted(_KEYS - keys), sorted(str(k) for k in keys - _KEYS)
        raise FrameError(f"header keys wrong: missing {missing}, unexpected {extra}")
    return obj


def _check_int(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise FrameError(f"header field {name!r} must be an int in [0, 2**63), got {value!r}")
    return value


def decode_frame(header: bytes, payload: np.ndarray | None, max_frame_bytes: int) -> Frame:
    """Parse and validate one frame; raise :class:`FrameError` naming the first problem.

    Nothing of a frame is used unless every check passes. ``max_frame_bytes``
    bounds the bytes that really travel (header + payload); a symbolic
    frame's virtual ``payload_bytes`` may be larger, since nothing is sent.
    """
    obj = _unpack(header, max_frame_bytes)
    ints = {k: _check_int(k, obj[k]) for k in _INT_KEYS}
    if ints["version"] != FRAME_VERSION:
        raise FrameError(f"unknown frame version {ints['version']} (expected {FRAME_VERSION})")
    dtype = obj["dtype"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise FrameError(f"dtype {dtype!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    shape_list = obj["shape"]
    if not isinstance(shape_list, list) or len(shape_list) > MAX_NDIM:
        raise FrameError(f"shape must be a list of at most {MAX_NDIM} dims, got {shape_list!r}")
    shape = tuple(_check_int("shape", d) for d in shape_list)
    symbolic = obj["symbolic"]
    if type(symbolic) is not bool:
        raise FrameError(f"header field 'symbolic' must be a bool, got {symbolic!r}")
    arrive_list = obj["arrive_ns"]
    if not isinstance(arrive_list, list):
        raise FrameError(f"arrive_ns must be a list, got {type(arrive_list).__name__}")
    if len(arrive_list) != ints["chunks"] or ints["chunks"] < 1:
        raise FrameError(
            f"arrive_ns has {len(arrive_list)} entries for {ints['chunks']} chunks (need >= 1)"
        )
    arrive = np.array([_check_int("arrive_ns", t) for t in arrive_list], dtype=np.int64)
    if np.any(np.diff(arrive) < 0):
        raise FrameError("arrive_ns must be non-decreasing over chunks")

    itemsize = allowed_dtype(dtype).itemsize
    count = 1
    for d in shape:
        count *= d
    if count * itemsize != ints["payload_bytes"]:
        raise FrameError(
            f"shape {shape} x {itemsize} B = {count * itemsize} B != payload_bytes "
            f"{ints['payload_bytes']}"
        )
    wire_bytes = len(header)
    array: np.ndarray | None = None
    if symbolic:
        if payload is not None:
            raise FrameError("symbolic frame must not carry a payload")
    else:
        if not isinstance(payload, np.ndarray):
            raise FrameError(f"payload must be a numpy array, got {type(payload).__name__}")
        if payload.dtype != allowed_dtype(dtype):
            raise FrameError(f"payload dtype {payload.dtype} != header dtype {dtype}")
        if payload.nbytes != ints["payload_bytes"]:
            raise FrameError(
                f"payload has {payload.nbytes} B, header says {ints['payload_bytes']} B"
            )
        wire_bytes += payload.nbytes
        array = payload.reshape(shape).view()  # a new view: the caller's flags stay as they were
        array.flags.writeable = False
    if wire_bytes > max_frame_bytes:
        raise FrameError(f"frame of {wire_bytes} B exceeds max_frame_bytes {max_frame_bytes}")
    return Frame(
        src=ints["src"],
        dst=ints["dst"],
        tag=ints["tag"],
        seq=ints["seq"],
        dtype=dtype,
        shape=shape,
        payload_bytes=ints["payload_bytes"],
        symbolic=symbolic,
        arrive_ns=arrive,
        payload=array,
    )
