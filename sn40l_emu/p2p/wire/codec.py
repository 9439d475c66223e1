"""The byte format of the same-host fast path: messages on a Unix-domain stream socket.

Every message starts with a one-byte kind; integers are little-endian::

    HELLO     kind=1  u32 rank                   first message of a connection: who sends
    FRAME     kind=2  u32 header_len  header  payload
    PING      kind=3  u64 token                  the receiver answers PONG once every message
                                                 before it on the connection has been handled
    BYE       kind=4                             graceful close (no BYE before EOF = peer died)
    ERROR     kind=5  u32 text_len  utf-8 text   receiver -> sender: a frame was rejected
    PONG      kind=6  u64 token                  receiver -> sender
    ARENA     kind=7  22 B name  u64 size        the sender's shared-memory arena for this
                                                 connection (:mod:`sn40l_emu.p2p.wire.shm_arena`)
    SHM_FRAME kind=8  u32 header_len  header  u64 offset   payload is in the arena
    RELEASE   kind=9  u64 offset                 receiver -> sender: arena block free again

``header`` is the msgpack frame header of :mod:`sn40l_emu.p2p.frame`. The
payload that follows it has exactly the length the header states; nothing of
it is read, and no buffer is allocated for it, before :func:`peek_header` has
checked the header and bounded header + payload by ``max_frame_bytes``. The
payload bytes are raw array bytes (never pickled): the receiver rebuilds the
array with ``np.frombuffer`` and :func:`~sn40l_emu.p2p.frame.decode_frame`
validates the whole frame again before anything uses it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from sn40l_emu.errors import FrameError
from sn40l_emu.p2p.frame import ALLOWED_DTYPES, MAX_HEADER_BYTES, _unpack, allowed_dtype

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
KIND_U32 = struct.Struct("<BI")
KIND_U64 = struct.Struct("<BQ")

#: Longest ERROR text sent or accepted (the rest is cut).
MAX_ERROR_BYTES = 4096
_INT64_MAX = (1 << 63) - 1


class Kind(IntEnum):
    HELLO = 1
    FRAME = 2
    PING = 3
    BYE = 4
    ERROR = 5
    PONG = 6
    ARENA = 7
    SHM_FRAME = 8
    RELEASE = 9


#: Length of an arena file name on the wire ("arena-" + 16 hex digits).
ARENA_NAME_BYTES = 22
ARENA_MSG_BYTES = 1 + ARENA_NAME_BYTES + 8


def hello(rank: int) -> bytes:
    return KIND_U32.pack(Kind.HELLO, rank)


def ping(token: int) -> bytes:
    return KIND_U64.pack(Kind.PING, token)


def pong(token: int) -> bytes:
    return KIND_U64.pack(Kind.PONG, token)


BYE = bytes([Kind.BYE])


def release(offset: int) -> bytes:
    return KIND_U64.pack(Kind.RELEASE, offset)


def arena(name: str, size: int) -> bytes:
    data = name.encode("ascii")
    if len(data) != ARENA_NAME_BYTES:
        raise ValueError(f"arena name {name!r} must be {ARENA_NAME_BYTES} ASCII characters")
    return bytes([Kind.ARENA]) + data + U64.pack(size)


def shm_frame(header: bytes, offset: int) -> bytes:
    """Kind, header length, header and the payload's offset in the sender's arena."""
    return KIND_U32.pack(Kind.SHM_FRAME, len(header)) + header + U64.pack(offset)


def error(text: str) -> bytes:
    data = text.encode("utf-8", "replace")[:MAX_ERROR_BYTES]
    return KIND_U32.pack(Kind.ERROR, len(data)) + data


def frame_prefix(header: bytes) -> bytes:
    """Kind, header length and header: the payload bytes follow on the stream."""
    return KIND_U32.pack(Kind.FRAME, len(header)) + header


def header_limit(max_frame_bytes: int) -> int:
    """Longest header a receiver reads (checked before reading it)."""
    return min(MAX_HEADER_BYTES, max_frame_bytes)


@dataclass(frozen=True)
class PayloadSpec:
    """What the validated header says follows it on the stream."""

    symbolic: bool
    nbytes: int  # bytes on the stream (0 for a symbolic frame)
    dtype: np.dtype

    def buffer(self) -> np.ndarray:
        """A buffer to receive the payload bytes into (uninitialised: every byte gets written)."""
        return np.empty(self.nbytes, dtype=np.uint8)

    def array(self, data: np.ndarray) -> np.ndarray:
        """The payload as a flat array over ``data`` (no copy); decode_frame reshapes it."""
        return np.frombuffer(data, dtype=self.dtype)


def peek_header(header: bytes, max_frame_bytes: int) -> PayloadSpec:
    """Check the fields that size the payload before anything is allocated for it.

    Uses the frame module's hardened msgpack limits; the full check of every
    field happens in ``decode_frame`` once the payload is in.
    """
    obj = _unpack(header, max_frame_bytes)
    symbolic = obj["symbolic"]
    nbytes = obj["payload_bytes"]
    name = obj["dtype"]
    if type(symbolic) is not bool:
        raise FrameError(f"header field 'symbolic' must be a bool, got {symbolic!r}")
    if type(nbytes) is not int or not 0 <= nbytes <= _INT64_MAX:
        raise FrameError(f"header field 'payload_bytes' must be an int in [0, 2**63), got {nbytes!r}")
    if not isinstance(name, str) or name not in ALLOWED_DTYPES:
        raise FrameError(f"dtype {name!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    dtype = allowed_dtype(name)
    if symbolic:
        return PayloadSpec(True, 0, dtype)
    if nbytes % dtype.itemsize:
        raise FrameError(f"payload_bytes {nbytes} is not a multiple of the {name} item size")
    if len(header) + nbytes > max_frame_bytes:
        raise FrameError(
            f"frame of {len(header) + nbytes} B exceeds max_frame_bytes {max_frame_bytes}"
        )
    return PayloadSpec(False, nbytes, dtype)
