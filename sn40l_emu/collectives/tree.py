"""Tree algorithms: Rabenseifner's recursive halving / doubling, and a binomial broadcast.

Chosen over a binary reduce-then-broadcast tree because every rank sends and
receives in every step (no idle leaves) and the bytes per rank are the ring's,
in log2(N) steps instead of 2(N-1): the latency-friendly middle ground.

* reduce-scatter by recursive halving: with distance d = N/2, N/4, ..., 1,
  rank i exchanges with i xor d; it keeps the half of its current block range
  on its own side of bit d and sends the other half, reducing what it gets.
  Rank i ends with block i (np.array_split rule over the group order).
* all-gather by recursive doubling: d = 1, 2, ..., N/2, rank i sends the
  d blocks it holds to i xor d and receives the partner's d blocks.
* all-reduce = the two in sequence.

These need N a power of two; for any other group size they fall back to the
ring algorithms (documented, and the closed forms do the same). The
broadcast is a binomial tree over positions relative to the root, which
works for any N: position r receives from r - 2^floor(log2 r) and sends to
r + 2^j for every 2^j > r, farthest first. Chunks are forwarded as they
arrive, so a deep tree still pipelines.
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.collectives.buffer import (
    WorkBuffer,
    gathered_shape,
    recv_range,
    send_range,
    shaped,
)
from sn40l_emu.collectives.call import CollCall
from sn40l_emu.collectives.ring import ring_all_gather, ring_all_reduce, ring_reduce_scatter
from sn40l_emu.p2p.transport import Tensor, chunk_bounds


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def halving_distances(n: int) -> list[int]:
    """n/2, n/4, ..., 1 (empty for n = 1)."""
    return [1 << k for k in reversed(range(n.bit_length() - 1))]


async def _halving(call: CollCall, buf: WorkBuffer, blocks: np.ndarray) -> None:
    i = call.index
    for d in halving_distances(call.n):
        base = i & ~(2 * d - 1)
        keep, give = (base, base + d) if not i & d else (base + d, base)
        partner = call.group[i ^ d]
        await send_range(
            call.t, partner, call.tag, buf, int(blocks[give]), int(blocks[give + d]), call.chunks
        )
        await recv_range(
            call.t,
            partner,
            call.tag,
            buf,
            int(blocks[keep]),
            int(blocks[keep + d]),
            call.chunks,
            call.op,
        )


async def _doubling(call: CollCall, buf: WorkBuffer, blocks: np.ndarray) -> None:
    i = call.index
    for d in reversed(halving_distances(call.n)):
        mine, theirs = i & ~(d - 1), (i ^ d) & ~(d - 1)
        partner = call.group[i ^ d]
        await send_range(
            call.t, partner, call.tag, buf, int(blocks[mine]), int(blocks[mine + d]), call.chunks
        )
        await recv_range(
            call.t,
            partner,
            call.tag,
            buf,
            int(blocks[theirs]),
            int(blocks[theirs + d]),
            call.chunks,
            None,
        )


async def tree_all_reduce(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    if not is_power_of_two(call.n):
        return await ring_all_reduce(call, data)
    buf = WorkBuffer.of(data, call.start_ns)
    blocks = chunk_bounds(buf.size, call.n)
    await _halving(call, buf, blocks)
    await _doubling(call, buf, blocks)
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)


async def tree_reduce_scatter(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    if not is_power_of_two(call.n):
        return await ring_reduce_scatter(call, data)
    buf = WorkBuffer.of(data, call.start_ns)
    blocks = chunk_bounds(buf.size, call.n)
    await _halving(call, buf, blocks)
    lo, hi = int(blocks[call.index]), int(blocks[call.index + 1])
    values = None if buf.values is None else buf.values[lo:hi].copy()
    return shaped(values, (hi - lo,), buf.dtype), buf.end_ns(call.start_ns, lo, hi)


async def tree_all_gather(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    if not is_power_of_two(call.n):
        return await ring_all_gather(call, data)
    shard = int(data.size)
    buf = WorkBuffer.empty(shard * call.n, data, call.start_ns)
    if buf.values is not None and isinstance(data, np.ndarray):
        buf.values[call.index * shard : (call.index + 1) * shard] = data.reshape(-1)
    await _doubling(call, buf, chunk_bounds(buf.size, call.n))
    result = shaped(buf.values, gathered_shape(data.shape, call.n), buf.dtype)
    return result, buf.end_ns(call.start_ns, 0, buf.size)


def binomial_children(rel: int, n: int) -> list[int]:
    """Relative positions ``rel`` sends to, farthest first."""
    out = []
    mask = 1 << max(0, (n - 1).bit_length())
    while mask >= 1 and mask > rel:
        if rel + mask < n:
            out.append(rel + mask)
        mask >>= 1
    return out


def binomial_parent(rel: int) -> int:
    return rel - (1 << (rel.bit_length() - 1))


async def tree_broadcast(call: CollCall, data: Tensor) -> tuple[Tensor, int]:
    buf = WorkBuffer.of(data, call.start_ns)
    root = call.group.index(call.root)
    rel = (call.index - root) % call.n
    if rel > 0:
        src = call.group[(binomial_parent(rel) + root) % call.n]
        await recv_range(call.t, src, call.tag, buf, 0, buf.size, call.chunks, None)
    for child in binomial_children(rel, call.n):
        dst = call.group[(child + root) % call.n]
        await send_range(call.t, dst, call.tag, buf, 0, buf.size, call.chunks)
    return shaped(buf.values, data.shape, buf.dtype), buf.end_ns(call.start_ns, 0, buf.size)


def binomial_depth(n: int) -> int:
    """Hops from the root to the deepest position: the largest popcount below ``n``."""
    return max(bin(r).count("1") for r in range(n))
