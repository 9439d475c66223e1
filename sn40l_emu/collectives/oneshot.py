"""One-shot (direct) algorithms: every rank talks to every other rank once.

Latency-optimal on a full mesh (one link latency for the whole collective,
docs/model.md §3: small decode all-reduces are latency bound). A rank sends to its
peers in rotated group order (index+1, index+2, ...) so that, where routes
share links, not every rank hits the same peer first. Contributions are
reduced in group order on every rank, so float results are bitwise identical
everywhere and accumulate in float32 once (no per-hop rounding).
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.collectives.buffer import (
    WorkBuffer,
    gathered_shape,
    recv_piece,
    send_range,
    shaped,
)
from sn40l_emu.collectives.call import CollCall
from sn40l_emu.collectives.reduction import reduce_ordered
from sn40l_emu.p2p.transport import Tensor, chunk_bounds


def _peers(call: CollCall) -> list[int]:
    """Group indices of the other ranks, starting after this one."""
    return [(call.index + i) % call.n for i in range(1, call.n)]


async def _reduce_range(call: CollCall, buf: WorkBuffer, lo: int, hi: int) -> None:
    """Receive ``[lo, hi)`` from every peer and reduce all contributions in group order."""
    parts: dict[int, np.ndarray] = {}
    for j in _peers(call):
        values, arrive = await recv_piece(
            call.t, call.group[j], call.tag, hi - lo, call.chunks, buf
        )
        buf.ready.update(lo, hi, call.chunks, arrive)
        if values is not None:
            parts[j] = values
    if buf.values is not None:
        parts[call.index] = buf.values[lo:hi]
        buf.values[lo:hi] = reduce_ordered(call.op, [parts[j] for j in range(call.n)])


async def oneshot_all_reduce(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    buf = WorkBuffer.of(data, call.start_ns)
    for j in _peers(call):
        await send_range(call.t, call.group[j], call.tag, buf, 0, buf.size, call.chunks)
    await _reduce_range(call, buf, 0, buf.size)
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)


async def oneshot_reduce_scatter(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    buf = WorkBuffer.of(data, call.start_ns)
    seg = chunk_bounds(buf.size, call.n)
    for j in _peers(call):
        await send_range(
            call.t, call.group[j], call.tag, buf, int(seg[j]), int(seg[j + 1]), call.chunks
        )
    lo, hi = int(seg[call.index]), int(seg[call.index + 1])
    await _reduce_range(call, buf, lo, hi)
    values = None if buf.values is None else buf.values[lo:hi].copy()
    return shaped(values, (hi - lo,), buf.dtype), buf.end_ns(call.start_ns, lo, hi)


async def oneshot_all_gather(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    shard = int(data.size)
    own = WorkBuffer.of(data, call.start_ns)
    for j in _peers(call):
        await send_range(call.t, call.group[j], call.tag, own, 0, shard, call.chunks)
    buf = WorkBuffer.empty(shard * call.n, data, call.start_ns)
    if buf.values is not None and own.values is not None:
        buf.values[call.index * shard : (call.index + 1) * shard] = own.values
    for j in _peers(call):
        lo, hi = j * shard, (j + 1) * shard
        values, arrive = await recv_piece(call.t, call.group[j], call.tag, shard, call.chunks, buf)
        buf.ready.update(lo, hi, call.chunks, arrive)
        if buf.values is not None and values is not None:
            buf.values[lo:hi] = values
    result = shaped(buf.values, gathered_shape(data.shape, call.n), buf.dtype)
    return result, buf.end_ns(call.start_ns, 0, buf.size)


async def oneshot_broadcast(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    buf = WorkBuffer.of(data, call.start_ns)
    root = call.group.index(call.root)
    if call.index == root:
        for i in range(1, call.n):
            dst = call.group[(root + i) % call.n]
            await send_range(call.t, dst, call.tag, buf, 0, buf.size, call.chunks)
    else:
        values, arrive = await recv_piece(call.t, call.root, call.tag, buf.size, call.chunks, buf)
        buf.ready.update(0, buf.size, call.chunks, arrive)
        if buf.values is not None and values is not None:
            buf.values[:] = values
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)
