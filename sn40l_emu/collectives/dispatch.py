"""Run a program's :class:`CollectiveOp` with the collective it names (registry by kind)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

from sn40l_emu.collectives.api import all_gather, all_reduce, broadcast, reduce_scatter
from sn40l_emu.p2p.transport import Tensor, Transport
from sn40l_emu.program import CollectiveKind, CollectiveOp

_Runner = Callable[[Transport, CollectiveOp, Tensor, int, int], Awaitable[tuple[Tensor, int]]]


async def _all_reduce(t: Transport, op: CollectiveOp, data: Tensor, start: int, tag: int) -> Any:
    return await all_reduce(
        t, op.group, data, start, op=op.op, algo=op.algo, chunks=op.chunks, tag=tag
    )


async def _reduce_scatter(
    t: Transport, op: CollectiveOp, data: Tensor, start: int, tag: int
) -> Any:
    return await reduce_scatter(
        t, op.group, data, start, op=op.op, algo=op.algo, chunks=op.chunks, tag=tag
    )


async def _all_gather(t: Transport, op: CollectiveOp, data: Tensor, start: int, tag: int) -> Any:
    return await all_gather(t, op.group, data, start, algo=op.algo, chunks=op.chunks, tag=tag)


async def _broadcast(t: Transport, op: CollectiveOp, data: Tensor, start: int, tag: int) -> Any:
    return await broadcast(
        t, op.group, data, start, root=op.root, algo=op.algo, chunks=op.chunks, tag=tag
    )


RUNNERS: MappingProxyType[CollectiveKind, _Runner] = MappingProxyType(
    {
        CollectiveKind.ALL_REDUCE: _all_reduce,
        CollectiveKind.REDUCE_SCATTER: _reduce_scatter,
        CollectiveKind.ALL_GATHER: _all_gather,
        CollectiveKind.BROADCAST: _broadcast,
    }
)


async def run_collective(
    t: Transport, op: CollectiveOp, data: Tensor, start_ns: int, tag: int
) -> tuple[Tensor, int]:
    """Run ``op`` for this rank; returns (result, end_ns)."""
    return await RUNNERS[op.kind](t, op, data, start_ns, tag)
