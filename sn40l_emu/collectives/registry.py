"""Implementations of every collective, keyed by the Algo enum (no string dispatch)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sn40l_emu.collectives.call import CollCall
from sn40l_emu.collectives.oneshot import (
    oneshot_all_gather,
    oneshot_all_reduce,
    oneshot_broadcast,
    oneshot_reduce_scatter,
)
from sn40l_emu.collectives.ring import (
    ring_all_gather,
    ring_all_reduce,
    ring_broadcast,
    ring_reduce_scatter,
)
from sn40l_emu.collectives.tree import (
    tree_all_gather,
    tree_all_reduce,
    tree_broadcast,
    tree_reduce_scatter,
)
from sn40l_emu.p2p.transport import Tensor
from sn40l_emu.program import Algo, CollectiveKind

Impl = Callable[[CollCall, Tensor], Awaitable[tuple[Tensor, int]]]

ALGORITHMS: dict[CollectiveKind, dict[Algo, Impl]] = {
    CollectiveKind.ALL_REDUCE: {
        Algo.RING: ring_all_reduce,
        Algo.ONESHOT: oneshot_all_reduce,
        Algo.TREE: tree_all_reduce,
    },
    CollectiveKind.REDUCE_SCATTER: {
        Algo.RING: ring_reduce_scatter,
        Algo.ONESHOT: oneshot_reduce_scatter,
        Algo.TREE: tree_reduce_scatter,
    },
    CollectiveKind.ALL_GATHER: {
        Algo.RING: ring_all_gather,
        Algo.ONESHOT: oneshot_all_gather,
        Algo.TREE: tree_all_gather,
    },
    CollectiveKind.BROADCAST: {
        Algo.RING: ring_broadcast,
        Algo.ONESHOT: oneshot_broadcast,
        Algo.TREE: tree_broadcast,
    },
}


def implementation(kind: CollectiveKind, algo: Algo) -> Impl:
    """The implementation of ``kind`` with ``algo`` (not AUTO: resolve it first)."""
    try:
        return ALGORITHMS[kind][algo]
    except KeyError:
        allowed = ", ".join(a.value for a in ALGORITHMS.get(kind, {}))
        raise ValueError(
            f"{kind.value} has no algorithm {algo.value!r} (have: {allowed})"
        ) from None
