"""A rank's working buffer inside one collective, and the two moves every algorithm makes.

The buffer is flat (collectives work on the flattened array, np.array_split
rule for segments). In timing mode ``values`` is None and only the ready map
moves, so real and symbolic tensors take the same code path and give the
same nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sn40l_emu.collectives.readymap import ReadyMap
from sn40l_emu.collectives.reduction import combine_into, combine_to
from sn40l_emu.collectives.result_pool import POOL
from sn40l_emu.errors import FrameError
from sn40l_emu.p2p.frame import ALLOWED_DTYPES, dtype_name
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import ReduceOp


def tensor_dtype(data: Tensor) -> str:
    """Allow-listed dtype name of a real or symbolic tensor."""
    if isinstance(data, SymbolicTensor):
        if data.dtype not in ALLOWED_DTYPES:
            raise FrameError(f"dtype {data.dtype!r} is not allowed")
        return data.dtype
    return dtype_name(data.dtype)


def shaped(values: np.ndarray | None, shape: tuple[int, ...], dtype: str) -> Tensor:
    """The result tensor: the array reshaped, or its symbolic stand-in."""
    if values is None:
        return SymbolicTensor(tuple(int(d) for d in shape), dtype)
    return values.reshape(shape)


def gathered_shape(shard_shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    """Shape of ``n`` shards concatenated along axis 0 (a 0-d shard gives ``(n,)``)."""
    if not shard_shape:
        return (n,)
    return (shard_shape[0] * n, *shard_shape[1:])


@dataclass
class WorkBuffer:
    """Flat values (None: timing mode) and when each element is ready on this rank."""

    values: np.ndarray | None
    dtype: str
    ready: ReadyMap

    @staticmethod
    def of(data: Tensor, start_ns: int) -> WorkBuffer:
        """A private flat copy of ``data`` (the caller's array is never written)."""
        dtype = tensor_dtype(data)
        values = None if isinstance(data, SymbolicTensor) else np.array(data, copy=True).reshape(-1)
        return WorkBuffer(values, dtype, ReadyMap(int(data.size), start_ns))

    @staticmethod
    def unfilled(data: Tensor, start_ns: int, values: np.ndarray | None = None
                 ) -> tuple[WorkBuffer, np.ndarray | None]:
        """A buffer whose values are not written yet, and ``data`` flat (read, never written).

        For an algorithm that reads each element of its input before it first
        writes it (the ring reduce-scatter): it reads the caller's array instead
        of a private copy of it, saving one full copy of the data. ``values``: where to
        build the result (flat, ``data``'s size and dtype), if not in fresh memory.
        """
        dtype = tensor_dtype(data)
        if isinstance(data, SymbolicTensor):
            return WorkBuffer(None, dtype, ReadyMap(int(data.size), start_ns)), None
        source = np.asarray(data).reshape(-1)
        if values is None or values.shape != source.shape or values.dtype != source.dtype:
            values = POOL.empty(int(source.size), source.dtype)  # warm pages when a result of this size died
        return WorkBuffer(values, dtype, ReadyMap(int(source.size), start_ns)), source

    @staticmethod
    def empty(size: int, like: Tensor, start_ns: int) -> WorkBuffer:
        """A buffer of ``size`` elements of ``like``'s dtype and mode, to be filled by receives."""
        dtype = tensor_dtype(like)
        values = None if isinstance(like, SymbolicTensor) else np.zeros(size, dtype=like.dtype)
        return WorkBuffer(values, dtype, ReadyMap(size, start_ns))

    @property
    def size(self) -> int:
        return self.ready.size

    def end_ns(self, start_ns: int, lo: int, hi: int) -> int:
        """When this rank holds all of ``[lo, hi)`` (never before the collective started)."""
        return max(start_ns, self.ready.max_over(lo, hi))

    def piece(self, lo: int, hi: int) -> Tensor:
        if self.values is None:
            return SymbolicTensor((hi - lo,), self.dtype)
        return self.values[lo:hi]


async def send_range(
    t: Transport, dst: int, tag: int, buf: WorkBuffer, lo: int, hi: int, chunks: int,
    values: np.ndarray | None = None,
) -> None:
    """Send elements ``[lo, hi)`` as ``chunks`` chunks, each leaving when it is ready.

    ``values``: where those elements are when not in ``buf`` (the caller's
    input, or a block the transport staged); the timing is ``buf``'s either way.
    """
    payload = buf.piece(lo, hi) if values is None or buf.values is None else values
    await t.send(dst, tag, payload, buf.ready.chunk_ready(lo, hi, chunks))


async def recv_piece(
    t: Transport, src: int, tag: int, size: int, chunks: int, buf: WorkBuffer
) -> tuple[np.ndarray | None, np.ndarray]:
    """Receive one frame that must hold ``size`` elements in ``chunks`` chunks of ``buf``'s kind."""
    payload, arrive = await t.recv(src, tag)
    if int(payload.size) != size or arrive.size != chunks or tensor_dtype(payload) != buf.dtype:
        raise FrameError(
            f"socket {t.rank} expected {size} x {buf.dtype} in {chunks} chunks from {src}, got "
            f"{int(payload.size)} x {tensor_dtype(payload)} in {arrive.size} chunks "
            "(ranks disagree on the collective)"
        )
    if isinstance(payload, SymbolicTensor):
        if buf.values is not None:
            raise FrameError(f"socket {src} sent a symbolic payload into a functional collective")
        return None, arrive
    if buf.values is None:
        raise FrameError(f"socket {src} sent real data into a timing-mode collective")
    return payload.reshape(-1), arrive


async def recv_range(
    t: Transport,
    src: int,
    tag: int,
    buf: WorkBuffer,
    lo: int,
    hi: int,
    chunks: int,
    op: ReduceOp | None,
) -> None:
    """Receive ``[lo, hi)``: copy it in (``op`` None) or reduce it into what is there."""
    values, arrive = await recv_piece(t, src, tag, hi - lo, chunks, buf)
    if values is not None and buf.values is not None:
        if op is None:
            buf.values[lo:hi] = values
        else:
            combine_into(op, buf.values[lo:hi], values)
    buf.ready.update(lo, hi, chunks, arrive)


async def recv_reduce_to(
    t: Transport, src: int, tag: int, buf: WorkBuffer, lo: int, hi: int, chunks: int,
    op: ReduceOp, base: np.ndarray | None, out: np.ndarray | None,
) -> None:
    """Receive ``[lo, hi)`` and write ``op(base, received)`` to ``out`` (timing into ``buf``).

    ``base`` and ``out`` are None exactly when ``buf`` is symbolic.
    """
    values, arrive = await recv_piece(t, src, tag, hi - lo, chunks, buf)
    if values is not None and base is not None and out is not None:
        combine_to(op, base, values, out)
    buf.ready.update(lo, hi, chunks, arrive)
