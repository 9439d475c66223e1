"""Closed forms agree with the in-process schedule to the nanosecond (idle full mesh)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from sn40l_emu.collectives import all_gather, all_reduce, broadcast, predict_ns, reduce_scatter
from sn40l_emu.collectives.closed_form import RouteCost, ring_all_reduce_ns
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.fabric.topology import make_topology
from sn40l_emu.p2p.inproc import run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import Algo, CollectiveKind
from sn40l_emu.units import GB, KiB, MiB, transfer_ns

START_NS = 12_345
PARAMS = P2PParams(
    TopologyKind.FULL_MESH,
    LinkParams(50 * GB, 1_000),
    150,
    1 << 30,
    0,
    5.0,
    LinkParams(25 * GB, 3_000),
)

Run = Callable[[Transport], Awaitable[tuple[Tensor, int]]]


def _ends(group: tuple[int, ...], body: Run) -> list[int]:
    return [end for _, end in run_group(group, body, PARAMS)]


def _lead_formula(n: int, k: int, size_bytes: int) -> int:
    t = transfer_ns(size_bytes // (n * k), PARAMS.link.bw_bytes_per_s) + PARAMS.chunk_overhead_ns
    lat = PARAMS.link.latency_ns
    return (2 * (n - 1) - 1) * max(lat + t, k * t) + k * t + lat


@pytest.mark.parametrize(
    ("group", "chunks", "size_bytes"),
    [
        (tuple(range(8)), 1, 64 * KiB),
        (tuple(range(8)), 4, 1 * MiB),
        (tuple(range(8)), 16, 1 * MiB),  # K T > L + T: bandwidth bound
        (tuple(range(8)), 3, 8 * 3 * 1000 * 4),
        ((4, 5, 6, 7), 8, 256 * KiB),
        ((0, 1), 2, 32 * KiB),
        ((1, 3, 6), 5, 3 * 5 * 64 * 4),
    ],
)
def test_ring_all_reduce_matches_closed_form(
    group: tuple[int, ...], chunks: int, size_bytes: int
) -> None:
    n = len(group)
    data = SymbolicTensor((size_bytes // 4,), "float32")
    ends = _ends(
        group, lambda t: all_reduce(t, group, data, START_NS, algo=Algo.RING, chunks=chunks)
    )
    expected = _lead_formula(n, chunks, size_bytes)
    assert expected == ring_all_reduce_ns(n, size_bytes, chunks, RouteCost.direct(PARAMS.link), 150)
    assert ends == [START_NS + expected] * n


def test_real_and_symbolic_give_the_same_nanoseconds() -> None:
    group = tuple(range(8))
    n_elems = 8 * 4 * 256
    real = _ends(
        group,
        lambda t: all_reduce(
            t, group, np.ones(n_elems, np.float32), START_NS, algo=Algo.RING, chunks=4
        ),
    )
    sym = _ends(
        group,
        lambda t: all_reduce(
            t, group, SymbolicTensor((n_elems,), "float32"), START_NS, algo=Algo.RING, chunks=4
        ),
    )
    assert real == sym == [START_NS + _lead_formula(8, 4, n_elems * 4)] * 8


KINDS = {
    CollectiveKind.ALL_REDUCE: lambda t, g, d, a, k: all_reduce(
        t, g, d, START_NS, algo=a, chunks=k
    ),
    CollectiveKind.REDUCE_SCATTER: lambda t, g, d, a, k: reduce_scatter(
        t, g, d, START_NS, algo=a, chunks=k
    ),
    CollectiveKind.ALL_GATHER: lambda t, g, d, a, k: all_gather(
        t, g, d, START_NS, algo=a, chunks=k
    ),
    CollectiveKind.BROADCAST: lambda t, g, d, a, k: broadcast(
        t, g, d, START_NS, root=g[-1], algo=a, chunks=k
    ),
}


@pytest.mark.parametrize("kind", list(CollectiveKind))
@pytest.mark.parametrize(
    ("algo", "chunks"),
    [(Algo.RING, 1), (Algo.RING, 4), (Algo.ONESHOT, 1), (Algo.ONESHOT, 4), (Algo.TREE, 1)],
)
@pytest.mark.parametrize("group", [tuple(range(8)), (2, 3, 5, 7), (0, 4, 6)])
def test_every_closed_form_is_exact(
    kind: CollectiveKind, algo: Algo, chunks: int, group: tuple[int, ...]
) -> None:
    n = len(group)
    size_bytes = 8 * 3 * 4 * 64 * 4  # divisible by N * K for every case here
    elems = size_bytes // 4 // (n if kind is CollectiveKind.ALL_GATHER else 1)
    data = SymbolicTensor((elems,), "float32")
    ends = _ends(group, lambda t: KINDS[kind](t, group, data, algo, chunks))
    topo = make_topology(TopologyKind.FULL_MESH, 8)
    predicted = predict_ns(kind, algo, size_bytes, group, topo, PARAMS, chunks, root=group[-1])
    if kind is CollectiveKind.BROADCAST:
        assert max(ends) == START_NS + predicted  # the deepest rank
    else:
        assert ends == [START_NS + predicted] * n


def test_tree_broadcast_pipelines_any_chunk_count() -> None:
    group = tuple(range(8))
    data = SymbolicTensor((8 * 1024,), "bfloat16")
    ends = _ends(
        group, lambda t: broadcast(t, group, data, START_NS, root=3, algo=Algo.TREE, chunks=8)
    )
    topo = make_topology(TopologyKind.FULL_MESH, 8)
    predicted = predict_ns(
        CollectiveKind.BROADCAST, Algo.TREE, 16 * 1024, group, topo, PARAMS, 8, root=3
    )
    assert max(ends) == START_NS + predicted


@pytest.mark.parametrize("topology", list(TopologyKind))
@pytest.mark.parametrize("size_bytes", [8 * KiB, pytest.param(4 * MiB, marks=pytest.mark.slow)])
@pytest.mark.parametrize(("algo", "k"), [(Algo.RING, 4), (Algo.ONESHOT, 1), (Algo.TREE, 1)])
def test_whole_node_all_reduce_is_exact_on_every_topology(
    topology: TopologyKind, size_bytes: int, algo: Algo, k: int
) -> None:
    """On every shipped topology the whole-node pattern is symmetric enough for the worst-route
    closed form to be exact too (a golden check of the multi-hop terms, not a guarantee)."""
    params = P2PParams(topology, PARAMS.link, 100, 1 << 30, 0, 5.0, PARAMS.scale_out)
    topo = make_topology(topology, 8)
    group = tuple(range(8))
    data = SymbolicTensor((size_bytes // 2,), "bfloat16")
    out = run_group(group, lambda t: all_reduce(t, group, data, 0, algo=algo, chunks=k), params)
    predicted = predict_ns(CollectiveKind.ALL_REDUCE, algo, size_bytes, group, topo, params, k)
    assert max(end for _, end in out) == predicted
