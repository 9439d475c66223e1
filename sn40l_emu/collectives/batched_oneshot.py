"""One-shot all-reduce and all-gather of a whole in-process group at once.

The frame path (:mod:`sn40l_emu.collectives.oneshot`) has every rank send its
buffer to each peer in rotated group order (index+1, index+2, ...) and then
receive; here round r sends, for every rank at once, the frame to the peer r
places after it: one :func:`sn40l_emu.fabric.network.transmit_rows` per round
over the N senders' own views, in the same per-sender order, so link FIFO
state and the nanoseconds are the frame path's. Every chunk of a sent buffer
is ready at the sender's start time (nothing has arrived yet), and a rank's
buffer is ready when the last contribution arrived. Values: every rank gets
the contributions reduced in group order (the frame path's ``reduce_ordered``),
or the shards concatenated in group order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sn40l_emu.collectives.buffer import gathered_shape, shaped, tensor_dtype
from sn40l_emu.collectives.call import CollCall
from sn40l_emu.collectives.reduction import reduce_ordered
from sn40l_emu.errors import FrameError
from sn40l_emu.fabric.network import transmit_rows
from sn40l_emu.p2p.framed import cached_chunk_bounds
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor
from sn40l_emu.program import CollectiveKind, np_dtype


def run_oneshot_batch(
    kind: CollectiveKind, members: Sequence[tuple[CollCall, Tensor]]
) -> list[tuple[Tensor, int]]:
    """Every member's (result, end_ns), in the order given (all-reduce or all-gather)."""
    call0, data0 = members[0]
    group = call0.group
    n = len(group)
    by_rank = {call.t.rank: (call, data) for call, data in members}
    if sorted(by_rank) != sorted(group) or len(members) != n:
        raise FrameError(f"group {group} met members {sorted(by_rank)}")
    dtype = tensor_dtype(data0)
    real = not isinstance(data0, SymbolicTensor)
    for call, data in members:
        if (tensor_dtype(data) != dtype or data.shape != data0.shape
                or isinstance(data, SymbolicTensor) == real):
            raise FrameError(f"socket {call.t.rank} brought {data.shape} x {tensor_dtype(data)} to a "
                             f"one-shot of {data0.shape} x {dtype} (ranks disagree on the collective)")
    calls = [by_rank[r][0] for r in group]
    k = call0.chunks
    sizes = np.diff(cached_chunk_bounds(int(data0.size), k)) * np_dtype(dtype).itemsize
    start = np.array([c.start_ns for c in calls], dtype=np.int64)
    end = start.copy()
    views = [c.t.network for c in calls]
    rows = np.broadcast_to(sizes, (n, k))
    ready = np.repeat(start[:, None], k, axis=1)
    for r in range(1, n):
        dst = [(i + r) % n for i in range(n)]
        arrive = transmit_rows(views, [group[d] for d in dst], rows, ready)
        np.maximum.at(end, dst, arrive.max(axis=1))
    if kind is CollectiveKind.ALL_REDUCE:
        value = None
        if real:
            value = reduce_ordered(calls[0].op, [np.asarray(by_rank[r][1]).reshape(-1) for r in group])
        shape = data0.shape
    else:
        value = np.concatenate([np.asarray(by_rank[r][1]).reshape(-1) for r in group]) if real else None
        shape = gathered_shape(data0.shape, n)
    out = []
    for call, _ in members:
        i = group.index(call.t.rank)
        mine = None if value is None else value.copy()
        out.append((shaped(mine, shape, dtype), int(end[i])))
    return out
