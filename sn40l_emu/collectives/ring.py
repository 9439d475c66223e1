"""Pipelined ring algorithms over the topology's ring order.

Every segment (one per rank, np.array_split rule over the flattened buffer,
segment i belongs to group member i) is cut into K chunks, each with its own
ready time. One physical send per step carries a segment's K chunks with
their ready-time vector; chunk k of step s leaves when chunk k of step s-1
has arrived (the reduction costs 0 ns: it is fused into the streaming kernel
on the PCUs). All-reduce = reduce-scatter then all-gather, 2(N-1) steps; see
:mod:`sn40l_emu.collectives.closed_form` for its time.

Ring position p sends to p+1 and receives from p-1. Labelling the segment
owned by position q as o(q), reduce-scatter step s sends o(p-s-1) and receives
o(p-s-2), so that the last step (s = N-2) brings p its own segment o(p);
all-gather step s sends o(p-s) and receives o(p-s-1).
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.collectives.buffer import (
    WorkBuffer,
    gathered_shape,
    recv_range,
    recv_reduce_to,
    send_range,
    shaped,
)
from sn40l_emu.collectives.call import CollCall
from sn40l_emu.p2p.transport import Tensor, chunk_bounds


class _Ring:
    """Ring geometry of one call: neighbours and the segment owned by each position."""

    def __init__(self, call: CollCall, size: int) -> None:
        order = call.ring()
        self.n = len(order)
        self.pos = order.index(call.t.rank)
        self.next = order[(self.pos + 1) % self.n]
        self.prev = order[(self.pos - 1) % self.n]
        self._owner = [call.group.index(r) for r in order]
        self.seg = chunk_bounds(size, self.n)

    def owned(self, offset: int) -> tuple[int, int]:
        """Element range of the segment owned by position ``pos + offset``."""
        j = self._owner[(self.pos + offset) % self.n]
        return int(self.seg[j]), int(self.seg[j + 1])


async def _reduce_scatter_phase(
    call: CollCall, ring: _Ring, buf: WorkBuffer, source: np.ndarray | None, stage: bool = True
) -> None:
    """``buf.values`` (if real) starts unwritten; ``source`` is the rank's input.

    Every segment is reduced here exactly once, as ``source + received``, and
    sent on at the next step (except the last, the rank's own): so it is
    reduced straight into the block the transport stages for that send (a
    shared-memory block on the same-host path: no copy) and only the own
    segment is written into ``buf``. The other segments of ``buf`` are written
    by the all-gather (or never read: reduce-scatter returns the own segment).
    Same additions in the same order as reducing in place: same bits.
    ``stage`` False: ``buf.values`` is itself sendable without a copy (it lives
    in the transport's shared memory), so every segment is reduced into it.
    """
    held: np.ndarray | None = None  # the segment reduced at the previous step, wherever it is
    for s in range(ring.n - 1):
        lo, hi = ring.owned(-s - 1)
        values = source[lo:hi] if s == 0 and source is not None else held
        await send_range(call.t, ring.next, call.tag, buf, lo, hi, call.chunks, values)
        lo, hi = ring.owned(-s - 2)
        out = None if buf.values is None else buf.values[lo:hi]
        if out is not None and stage and s < ring.n - 2:
            staged = await call.t.staging(ring.next, hi - lo, out.dtype)
            out = out if staged is None else staged
        base = None if source is None else source[lo:hi]
        await recv_reduce_to(call.t, ring.prev, call.tag, buf, lo, hi, call.chunks, call.op, base, out)
        held = out


def _unfilled(call: CollCall, data: Tensor, n: int) -> tuple[WorkBuffer, np.ndarray | None]:
    """The working buffer of a ring reduction (a copy of ``data`` when there is no ring)."""
    if n > 1:
        return WorkBuffer.unfilled(data, call.start_ns)
    return WorkBuffer.of(data, call.start_ns), None


async def _all_gather_phase(call: CollCall, ring: _Ring, buf: WorkBuffer) -> None:
    for s in range(ring.n - 1):
        await send_range(call.t, ring.next, call.tag, buf, *ring.owned(-s), call.chunks)
        await recv_range(call.t, ring.prev, call.tag, buf, *ring.owned(-s - 1), call.chunks, None)


async def ring_all_reduce(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    """Reduce-scatter then all-gather. Where the transport offers it, the result is built
    in shared memory it can send pieces of without a copy (``Transport.result_buffer``):
    every segment this rank sends, partial sums and final, is then a piece of the result,
    and each all-gather step costs one copy (peer's block -> result) instead of two."""
    ring = _Ring(call, int(data.size))
    shared = None
    if ring.n > 1 and isinstance(data, np.ndarray):
        shared = await call.t.result_buffer(ring.next, int(data.size), data.dtype)
    buf, source = WorkBuffer.unfilled(data, call.start_ns, shared) if shared is not None else _unfilled(
        call, data, ring.n)
    await _reduce_scatter_phase(call, ring, buf, source, stage=shared is None)
    await _all_gather_phase(call, ring, buf)
    if shared is not None:
        await call.t.settle()  # the next rank has read every piece: the result may be written
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)


async def ring_reduce_scatter(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    ring = _Ring(call, int(data.size))
    buf, source = _unfilled(call, data, ring.n)
    await _reduce_scatter_phase(call, ring, buf, source)
    lo, hi = ring.owned(0)
    values = None if buf.values is None else buf.values[lo:hi].copy()
    return shaped(values, (hi - lo,), buf.dtype), buf.end_ns(call.start_ns, lo, hi)


async def ring_all_gather(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    shard = int(data.size)
    buf = WorkBuffer.empty(shard * call.n, data, call.start_ns)
    ring = _Ring(call, buf.size)
    lo, hi = ring.owned(0)
    if buf.values is not None and isinstance(data, np.ndarray):
        buf.values[lo:hi] = data.reshape(-1)
    await _all_gather_phase(call, ring, buf)
    result = shaped(buf.values, gathered_shape(data.shape, call.n), buf.dtype)
    return result, buf.end_ns(call.start_ns, 0, buf.size)


async def ring_broadcast(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    """A pipelined chain from the root along the ring order (N-1 links, each used once)."""
    buf = WorkBuffer.of(data, call.start_ns)
    order = call.ring()
    n = len(order)
    pos = order.index(call.t.rank)
    rel = (pos - order.index(call.root)) % n
    if rel > 0:
        await recv_range(
            call.t, order[(pos - 1) % n], call.tag, buf, 0, buf.size, call.chunks, None
        )
    if rel < n - 1:
        await send_range(call.t, order[(pos + 1) % n], call.tag, buf, 0, buf.size, call.chunks)
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)
