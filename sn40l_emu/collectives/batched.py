"""Ring collectives of a whole in-process group at once: one numpy step for all N ranks.

Why: the frame path (:mod:`sn40l_emu.collectives.ring`) costs every rank an
encode, a mailbox round trip and a ready-map update per step, so a 64-socket
ring paid ~180 us of wall per emulated message. Here the members meet
(:class:`sn40l_emu.p2p.rendezvous.Rendezvous`) and the last one runs the
whole ring: per step one (N, K) array of chunk ready times, one
:func:`sn40l_emu.fabric.network.transmit_rows` over the N senders' own views,
and O(N) Python. The schedule is the frame path's, step for step -- position
p sends segment o(p-s-1) (reduce-scatter) or o(p-s) (all-gather) to p+1 --
and a chunk is ready when it arrived (the max is kept, as ReadyMap does), so
the nanoseconds and the bits are the same.

Only shapes where every ring segment has at least K elements (so every chunk
is non-empty and the segment-chunk grid is the only grid) and every frame fits
``max_frame_bytes`` are batched; the rest take the frame path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sn40l_emu.collectives.buffer import gathered_shape, shaped, tensor_dtype
from sn40l_emu.collectives.call import CollCall
from sn40l_emu.collectives.reduction import UFUNCS, accumulate_dtype, combine_into
from sn40l_emu.errors import FrameError
from sn40l_emu.fabric.network import NetworkView, RowChannels
from sn40l_emu.p2p.framed import cached_chunk_bounds
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor
from sn40l_emu.program import CollectiveKind, np_dtype

BATCHED_KINDS = frozenset(
    {CollectiveKind.ALL_REDUCE, CollectiveKind.REDUCE_SCATTER, CollectiveKind.ALL_GATHER}
)
_HEADER_BOUND_BYTES = 256  # a frame header without its arrival list is well under this
_BYTES_PER_ARRIVAL = 9  # msgpack uint64


def batchable(
    kind: CollectiveKind, n: int, size: int, dtype: str, chunks: int, real: bool, max_frame_bytes: int
) -> bool:
    """Whether the ring of ``size`` elements (the full buffer) over ``n`` ranks can be batched.

    Every input is one all members share, so they all take the same path.
    """
    if kind not in BATCHED_KINDS or n < 2 or size // n < chunks:
        return False
    seg_bytes = -(-size // n) * np_dtype(dtype).itemsize if real else 0
    return seg_bytes + _HEADER_BOUND_BYTES + _BYTES_PER_ARRIVAL * chunks <= max_frame_bytes


def oneshot_batchable(
    kind: CollectiveKind, size: int, dtype: str, chunks: int, real: bool, max_frame_bytes: int
) -> bool:
    """Whether a one-shot of ``size`` elements per rank can be batched (every chunk non-empty,
    every frame within ``max_frame_bytes``); all-reduce and all-gather only."""
    if kind not in (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER) or size < chunks:
        return False
    frame = size * np_dtype(dtype).itemsize if real else 0
    return frame + _HEADER_BOUND_BYTES + _BYTES_PER_ARRIVAL * chunks <= max_frame_bytes


def full_size(kind: CollectiveKind, data: Tensor, n: int) -> int:
    return int(data.size) * (n if kind is CollectiveKind.ALL_GATHER else 1)


def run_ring_batch(
    kind: CollectiveKind, members: Sequence[tuple[CollCall, Tensor]]
) -> list[tuple[Tensor, int]]:
    """Every member's (result, end_ns), in the order given."""
    call0, data0 = members[0]
    order = call0.ring()
    n = len(order)
    by_rank = {call.t.rank: (call, data) for call, data in members}
    if sorted(by_rank) != sorted(order) or len(members) != n:
        raise FrameError(f"ring {order} met members {sorted(by_rank)}")
    dtype = tensor_dtype(data0)
    real = not isinstance(data0, SymbolicTensor)
    for call, data in members:
        if (tensor_dtype(data) != dtype or int(data.size) != int(data0.size)
                or isinstance(data, SymbolicTensor) == real or data.shape != data0.shape):
            raise FrameError(
                f"socket {call.t.rank} brought {int(data.size)} x {tensor_dtype(data)} "
                f"({'symbolic' if isinstance(data, SymbolicTensor) else 'real'}) to a ring of "
                f"{int(data0.size)} x {dtype} (ranks disagree on the collective)"
            )
    k = call0.chunks
    size = full_size(kind, data0, n)
    seg = cached_chunk_bounds(size, n)
    itemsize = np_dtype(dtype).itemsize
    calls = [by_rank[r][0] for r in order]
    views: list[NetworkView] = [c.t.network for c in calls]
    nxt = [order[(p + 1) % n] for p in range(n)]
    owner = np.array([call0.group.index(r) for r in order], dtype=np.int64)  # segment of pos
    chunk_bytes = np.stack(
        [np.diff(cached_chunk_bounds(int(seg[j + 1] - seg[j]), k)) * itemsize for j in range(n)]
    )  # (segment, chunk)
    start = np.array([c.start_ns for c in calls], dtype=np.int64)
    ready = np.repeat(start[:, None, None], n, axis=1).repeat(k, axis=2)  # (pos, segment, chunk)
    values = _initial_values(kind, [by_rank[r] for r in order], owner, seg) if real else None

    phases: list[tuple[int, bool]] = []  # (offset of the segment sent, reduce?)
    if kind is not CollectiveKind.ALL_GATHER:
        phases.append((1, True))
    if kind is not CollectiveKind.REDUCE_SCATTER:
        phases.append((0, False))
    with RowChannels(views, nxt) as channels:
        for offset, reduce in phases:
            _phase(channels, offset, reduce, owner, chunk_bytes, ready, values, calls, seg)
    return [_result(kind, by_rank[r][1], calls[p], ready[p], owner[p], seg, values, p, n, dtype)
            for p, r in ((order.index(c.t.rank), c.t.rank) for c, _ in members)]


def _phase(
    channels: RowChannels, offset: int, reduce: bool, owner: np.ndarray, chunk_bytes: np.ndarray,
    ready: np.ndarray, values: np.ndarray | None, calls: list[CollCall], seg: np.ndarray,
) -> None:
    """N-1 ring steps; position p sends segment o(p - s - offset) to p + 1 at step s."""
    n = owner.size
    pos = np.arange(n)
    src = (pos - 1) % n
    for s in range(n - 1):
        jsend = owner[(pos - s - offset) % n]
        arrive = channels.send(chunk_bytes[jsend], ready[pos, jsend])
        jrecv = jsend[src]
        ready[pos, jrecv] = np.maximum(ready[pos, jrecv], arrive[src])
        if values is not None:
            _move(values, calls, jrecv, src, seg, reduce)


def _initial_values(
    kind: CollectiveKind, ordered: list[tuple[CollCall, Tensor]], owner: np.ndarray, seg: np.ndarray
) -> np.ndarray:
    """Every position's flat working buffer, one row each (a private copy of its data)."""
    arrays = [data for _, data in ordered]
    assert all(isinstance(a, np.ndarray) for a in arrays)
    if kind is not CollectiveKind.ALL_GATHER:
        return np.stack([np.asarray(a).reshape(-1) for a in arrays])
    out = np.zeros((len(arrays), int(seg[-1])), dtype=np.asarray(arrays[0]).dtype)
    for p, a in enumerate(arrays):
        j = int(owner[p])
        out[p, seg[j]:seg[j + 1]] = np.asarray(a).reshape(-1)
    return out


def _move(
    values: np.ndarray, calls: list[CollCall], jrecv: np.ndarray, src: np.ndarray,
    seg: np.ndarray, reduce: bool,
) -> None:
    """Position p takes segment jrecv[p] from position src[p] (which does not write it this step).

    One slice per position: measured faster than one fancy-indexed gather and
    scatter over all positions (those copy through temporaries).
    """
    bounds = seg.tolist()
    if reduce:
        op = calls[0].op
        in_place = accumulate_dtype(values.dtype) == values.dtype
        ufunc = UFUNCS[op]
        for p, (j, q) in enumerate(zip(jrecv.tolist(), src.tolist(), strict=True)):
            lo, hi = bounds[j], bounds[j + 1]
            if in_place:  # combine_into's fast branch, without its per-call checks
                ufunc(values[p, lo:hi], values[q, lo:hi], out=values[p, lo:hi])
            else:
                combine_into(op, values[p, lo:hi], values[q, lo:hi])
        return
    for p, (j, q) in enumerate(zip(jrecv.tolist(), src.tolist(), strict=True)):
        lo, hi = bounds[j], bounds[j + 1]
        values[p, lo:hi] = values[q, lo:hi]


def _result(
    kind: CollectiveKind, data: Tensor, call: CollCall, ready: np.ndarray, own: int,
    seg: np.ndarray, values: np.ndarray | None, p: int, n: int, dtype: str,
) -> tuple[Tensor, int]:
    flat = None if values is None else values[p]
    if kind is CollectiveKind.REDUCE_SCATTER:
        lo, hi = int(seg[own]), int(seg[own + 1])
        end = max(call.start_ns, int(ready[own].max()))
        return shaped(None if flat is None else flat[lo:hi].copy(), (hi - lo,), dtype), end
    end = max(call.start_ns, int(ready.max()))
    shape = gathered_shape(data.shape, n) if kind is CollectiveKind.ALL_GATHER else data.shape
    return shaped(flat, shape, dtype), end
