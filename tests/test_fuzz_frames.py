"""Fuzz: the P2P frame decoder takes any header bytes and payload without a crash.

Property, over 10,000 generated frames: :func:`decode_frame` returns a valid
frame or raises :class:`~sn40l_emu.errors.FrameError` (an ``EmuError``), never
anything else, and allocates at most ``ALLOC_BOUND_BYTES`` while doing so
(tracemalloc peak, measured around the call alone).

Frames start from real encoded headers, then are mutated: bytes flipped,
inserted, cut; fields replaced by values of any msgpack type (huge and
negative ints, floats, strings, nested containers); keys dropped or added;
the payload swapped for one of the wrong dtype, size or type. Settings are
derandomized so every run tries the same frames (reproducible, no flakes).
"""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sn40l_emu.errors import EmuError
from sn40l_emu.p2p.frame import ALLOWED_DTYPES, Frame, decode_frame, encode_frame
from sn40l_emu.p2p.transport import SymbolicTensor

# About a minute of fuzzing: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SN40L_FUZZ_FRAMES", "10000"))
# Headers generated here stay under 1 MiB (the decoder's own limit); the decoder may copy them a few times
# (msgpack objects, the arrival list, the int64 array). Anything near 1 MiB would mean
# it allocated from a size the header *claims* (shape, payload_bytes), which it must not.
ALLOC_BOUND_BYTES = 1 << 20
MAX_FRAME_BYTES = 1 << 20

_DTYPES = sorted(ALLOWED_DTYPES)
_NP = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}

msgpack_values = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80), st.binary(max_size=40),
    st.sampled_from([*_DTYPES, "object", "float64", "<f4", "", [], {}, [[[]]], [-1, 2**40], {"a": 1},
                     list(range(70_000)), [2**63 - 1] * 3, [1.5], [2**62, 2**62, 2**62]]),
)


def _base_frames() -> list[tuple[bytes, np.ndarray | None]]:
    """A few real frames of every kind, encoded once (mutations start from these)."""
    out: list[tuple[bytes, np.ndarray | None]] = []
    arrive = np.array([5, 9, 9, 40], dtype=np.int64)
    for i, dtype in enumerate(_DTYPES):
        for shape in [(), (0,), (3,), (2, 5), (1, 2, 3, 4)]:
            out.append(encode_frame(i, i + 1, 7, 3, SymbolicTensor(shape, dtype), arrive[: 1 + i % 4]))
            if dtype in _NP:
                header, flat = encode_frame(i, i + 1, 7, 3, np.zeros(shape, dtype=_NP[dtype]), arrive)
                out.append((header, None if flat is None else flat.copy()))
    return out


_BASE = _base_frames()
_BAD_PAYLOADS = [None, b"not an array", np.zeros(3, np.float64), np.zeros(7, np.float32),
                 np.zeros((2, 2), np.int32), np.array(["x"], dtype=object), np.zeros(0, np.int64)]


# Every strategy the composite draws from is built once, here: a strategy built inside the draw
# (a list for sampled_from is not cacheable) is validated and labelled again for each of the
# 10,000 examples, which cost more than decoding the frame. Positions and keys that depend on
# the frame at hand are drawn as an index and reduced modulo the frame's own length.
_BASES = st.sampled_from(_BASE)
_HOW = st.sampled_from(("fields", "bytes", "payload", "random", "valid"))
_ONE_OR_TWO = st.integers(1, 2)
_FIELD_ACTION = st.sampled_from(("replace", "drop", "add"))
_BYTE_OP = st.sampled_from(("flip", "insert", "cut"))
_INDEX = st.integers(0, 4095)
_BYTE = st.integers(0, 255)
_INSERTED = st.binary(min_size=1, max_size=9)
_CUT = st.integers(1, 16)
_NEW_KEY = st.text(max_size=10)
_BAD_PAYLOAD = st.sampled_from(_BAD_PAYLOADS)
_RANDOM_HEADER = st.binary(max_size=256)


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[Any, Any]:
    header, payload = draw(_BASES)
    how = draw(_HOW)
    if how == "fields":
        obj = msgpack.unpackb(header, raw=False)
        for _ in range(draw(_ONE_OR_TWO)):
            action = draw(_FIELD_ACTION)
            keys = sorted(obj) or ["version"]
            key = keys[draw(_INDEX) % len(keys)]
            if action == "replace":
                obj[key] = draw(msgpack_values)
            elif action == "drop":
                obj.pop(key, None)
            else:
                obj[draw(_NEW_KEY)] = draw(msgpack_values)
        header = msgpack.packb(obj, use_bin_type=draw(st.booleans()))
    elif how == "bytes":
        raw = bytearray(header)
        for _ in range(draw(_ONE_OR_TWO)):
            op = draw(_BYTE_OP)
            pos = draw(_INDEX) % max(1, len(raw))
            if op == "flip" and raw:
                raw[pos] = draw(_BYTE)
            elif op == "insert":
                raw[pos:pos] = draw(_INSERTED)
            else:
                del raw[pos:pos + draw(_CUT)]
        header = bytes(raw)
    elif how == "payload":
        payload = draw(_BAD_PAYLOAD)
    elif how == "random":
        header = draw(_RANDOM_HEADER)
    return header, payload


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_frames())
def test_decoder_returns_a_frame_or_frame_error(case: tuple[Any, Any]) -> None:
    header, payload = case
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        try:
            frame = decode_frame(header, payload, MAX_FRAME_BYTES)
            event("decoded")
        except EmuError as exc:
            event(f"refused: {type(exc).__name__}")
            frame = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before <= ALLOC_BOUND_BYTES, peak - before
    if frame is not None:  # whatever passed is internally consistent
        assert isinstance(frame, Frame) and frame.dtype in ALLOWED_DTYPES and frame.chunks >= 1
        assert np.all(np.diff(frame.arrive_ns) >= 0)
        if frame.payload is not None:
            assert frame.payload.shape == frame.shape and not frame.payload.flags.writeable
