"""The four collectives, as every socket calls them.

Each is an ``async`` function written once against :class:`Transport`, so it
runs unchanged between Ray actors and in one process. ``group`` holds global
socket indices (any subset: TP2, TP4, TP8, TP16); every member calls the
same collective with the same group, size, algo, chunks and tag. Returns
(result, end_ns): ``end_ns`` is when this rank holds its whole result.

``algo=Algo.AUTO`` asks :func:`select_algo` for the algorithm and chunk
count; an explicit algorithm overrides it. With an explicit algorithm,
``chunks=0`` means ``P2PParams.default_chunks`` for the ring (when > 0) and
the tuner's best chunk count otherwise; ``chunks > 0`` is used as given.

Agreement: the ring order and the AUTO choice are computed locally by every
member from its network view's down links at its own ``start_ns``. Members
must therefore see the same down links when they start (inject link-down
events on every socket with the same ``from_ns``, and not between the start
times of one collective's members); otherwise they may pick different rings
and the collective fails with a P2P timeout, never silently: the frames' tag
mixes in the algorithm, chunk count and ring order (:func:`wire_tag`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sn40l_emu.collectives.batched import batchable, full_size, oneshot_batchable, run_ring_batch
from sn40l_emu.collectives.batched_oneshot import run_oneshot_batch
from sn40l_emu.collectives.buffer import tensor_dtype
from sn40l_emu.collectives.call import CollCall, wire_tag
from sn40l_emu.collectives.registry import implementation
from sn40l_emu.collectives.selector import best_chunks, select_algo, uses_ring
from sn40l_emu.errors import ConfigError
from sn40l_emu.p2p.framed import FramedTransport
from sn40l_emu.p2p.transport import Tensor, Transport
from sn40l_emu.program import Algo, CollectiveKind, ReduceOp, np_dtype


def _resolve(
    kind: CollectiveKind,
    t: Transport,
    group: tuple[int, ...],
    size_bytes: int,
    start_ns: int,
    algo: Algo,
    chunks: int,
    root: int,
) -> tuple[Algo, int]:
    if chunks < 0:
        raise ValueError(f"chunks must be >= 0 (0 = tuned), got {chunks}")
    if algo is Algo.NVLS:
        raise ConfigError("--algo", algo.value, "auto, ring, oneshot or tree over P2P links "
                          "(nvls is NCCL's, on a profile with nccl.nvls_channels >= 2)")
    down = t.network.down_links(start_ns)
    params = t.network.params
    if algo is Algo.AUTO:
        chosen, k = select_algo(
            kind, size_bytes, group, t.topology, params, down_links=down, root=root
        )
        return chosen, chunks or k
    if chunks == 0 and algo is Algo.RING and params.default_chunks > 0:
        return algo, params.default_chunks  # the profile's fixed chunks per ring segment
    if chunks == 0:
        chunks, _ = best_chunks(
            kind, algo, size_bytes, group, t.topology, params, down_links=down, root=root
        )
    return algo, chunks


async def _run(
    kind: CollectiveKind,
    t: Transport,
    group: tuple[int, ...],
    data: Tensor,
    start_ns: int,
    op: ReduceOp,
    algo: Algo,
    chunks: int,
    tag: int,
    root: int,
    size_bytes: int,
) -> tuple[Tensor, int]:
    group = tuple(int(g) for g in group)
    chosen, k = _resolve(kind, t, group, size_bytes, start_ns, algo, chunks, root)
    ring: tuple[int, ...] = ()
    if uses_ring(kind, chosen, len(group)):
        ring = t.topology.ring_order(group, t.network.down_links(start_ns))
    wtag = wire_tag(int(tag), kind, chosen, k, ring)
    call = CollCall(t, group, int(start_ns), ReduceOp(op), k, wtag, int(root), ring)
    if call.n == 1:
        return data if not isinstance(data, np.ndarray) else data.copy(), call.start_ns
    # The batched path moves no frames, so it has no messages to draw: a traced program (the
    # whole node traces, or none of it) takes the frame path, which gives the same nanoseconds.
    meet = t.rendezvous if isinstance(t, FramedTransport) and t.trace is None else None
    batched: tuple[Tensor, int] | None = None
    if (meet is not None and isinstance(t, FramedTransport) and chosen is Algo.RING and ring
            and batchable(kind, call.n, full_size(kind, data, call.n), tensor_dtype(data), k,
                          isinstance(data, np.ndarray), t.max_frame_bytes)):
        # in one process every member meets here and the ring runs once for all
        peer = ring[(ring.index(t.rank) - 1) % len(ring)]
        batched = await meet.join(
            t.collective_key(group, wtag), call.n, (call, data),
            lambda members: _unless_faults(members, lambda: run_ring_batch(kind, members)), t.timeout_s, peer,
        )
    elif (meet is not None and isinstance(t, FramedTransport) and chosen is Algo.ONESHOT
            and oneshot_batchable(kind, int(data.size), tensor_dtype(data), k,
                                  isinstance(data, np.ndarray), t.max_frame_bytes)):
        batched = await meet.join(
            t.collective_key(group, wtag), call.n, (call, data),
            lambda members: _unless_faults(members, lambda: run_oneshot_batch(kind, members)), t.timeout_s,
            group[(group.index(t.rank) - 1) % len(group)],
        )
    if batched is not None:
        return batched
    result = await implementation(kind, chosen)(call, data)
    await t.flush()
    return result


def _unless_faults(members: Sequence[Any], run: Callable[[], Sequence[tuple[Tensor, int]]]
                   ) -> Sequence[tuple[Tensor, int] | None]:
    """The batched results, or None for every member when any member's view has a timed fault.

    Why: a link going down or a sender dying cuts frames (``fabric/link.py``), and the batched
    path moves none; so when any member sees a down/up timeline or a scheduled death, they all
    take the frame path together (decided once, here, where they all met). Same nanoseconds
    when nothing fails.
    """
    if any(getattr(c.t, "network", None) is not None and c.t.network.timed_faults for c, _ in members):
        return [None] * len(members)
    return run()


def _nbytes(data: Tensor) -> int:
    return int(data.size) * np_dtype(tensor_dtype(data)).itemsize


async def all_reduce(
    t: Transport,
    group: tuple[int, ...],
    data: Tensor,
    start_ns: int,
    *,
    op: ReduceOp = ReduceOp.SUM,
    algo: Algo = Algo.AUTO,
    chunks: int = 0,
    tag: int = 0,
) -> tuple[Tensor, int]:
    """Element-wise ``op`` over the group; every rank gets the same array (bitwise)."""
    return await _run(
        CollectiveKind.ALL_REDUCE,
        t,
        group,
        data,
        start_ns,
        op,
        algo,
        chunks,
        tag,
        group[0],
        _nbytes(data),
    )


async def reduce_scatter(
    t: Transport,
    group: tuple[int, ...],
    data: Tensor,
    start_ns: int,
    *,
    op: ReduceOp = ReduceOp.SUM,
    algo: Algo = Algo.AUTO,
    chunks: int = 0,
    tag: int = 0,
) -> tuple[Tensor, int]:
    """This rank's piece of the reduced array: 1-D, piece ``group.index(rank)`` of
    ``np.array_split(flattened, len(group))``."""
    if len(group) == 1:
        data = data.reshape(-1) if isinstance(data, np.ndarray) else data
    return await _run(
        CollectiveKind.REDUCE_SCATTER,
        t,
        group,
        data,
        start_ns,
        op,
        algo,
        chunks,
        tag,
        group[0],
        _nbytes(data),
    )


async def all_gather(
    t: Transport,
    group: tuple[int, ...],
    data: Tensor,
    start_ns: int,
    *,
    algo: Algo = Algo.AUTO,
    chunks: int = 0,
    tag: int = 0,
) -> tuple[Tensor, int]:
    """Concatenation of every rank's shard in group order (along axis 0 of the shard).

    All shards must have the same shape and dtype.
    """
    return await _run(
        CollectiveKind.ALL_GATHER,
        t,
        group,
        data,
        start_ns,
        ReduceOp.SUM,
        algo,
        chunks,
        tag,
        group[0],
        _nbytes(data) * len(group),
    )


async def broadcast(
    t: Transport,
    group: tuple[int, ...],
    data: Tensor,
    start_ns: int,
    *,
    root: int,
    algo: Algo = Algo.AUTO,
    chunks: int = 0,
    tag: int = 0,
) -> tuple[Tensor, int]:
    """The root's ``data`` on every rank; the others pass a tensor of the same shape and dtype."""
    return await _run(
        CollectiveKind.BROADCAST,
        t,
        group,
        data,
        start_ns,
        ReduceOp.SUM,
        algo,
        chunks,
        tag,
        root,
        _nbytes(data),
    )
