"""Timing behaviour: bottleneck links, dead links, chunk count, selector, determinism."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sn40l_emu.collectives import all_reduce, predict_ns, select_algo
from sn40l_emu.collectives.closed_form import RouteCost, ring_all_reduce_ns
from sn40l_emu.errors import LinkDownError, P2PTimeoutError
from sn40l_emu.fabric.link import LOST_NS
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.fabric.topology import make_topology
from sn40l_emu.p2p.inproc import make_inproc_transports, run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import Algo, CollectiveKind
from sn40l_emu.units import GB, KiB, MiB, transfer_ns

LINK = LinkParams(50 * GB, 1_000)
GROUP = tuple(range(8))


def _params(kind: TopologyKind = TopologyKind.FULL_MESH) -> P2PParams:
    return P2PParams(kind, LINK, 100, 1 << 30, 0, 5.0, LinkParams(25 * GB, 3_000))


def _all_reduce_ends(
    data: Tensor,
    algo: Algo,
    chunks: int,
    *,
    inject: Callable[[NetworkView], None] | None = None,
    params: P2PParams | None = None,
    group: tuple[int, ...] = GROUP,
) -> list[int]:
    params = params or _params()
    transports = make_inproc_transports(group, params)
    for t in transports.values():  # an injection reaches every socket's view
        if inject is not None:
            inject(t.network)
    out = run_group(
        group,
        lambda t: all_reduce(t, group, data, 0, algo=algo, chunks=chunks),
        params,
        transports=transports,
    )
    return [end for _, end in out]


def test_half_bandwidth_link_is_the_ring_bottleneck() -> None:
    data = SymbolicTensor((32 * MiB,), "bfloat16")  # 64 MiB: bandwidth bound
    idle = _all_reduce_ends(data, Algo.RING, 8)
    slow = _all_reduce_ends(
        data, Algo.RING, 8, inject=lambda n: n.set_link(3, 4, LinkParams(25 * GB, 1_000), 0)
    )
    half = RouteCost.direct(LinkParams(25 * GB, 1_000))
    assert max(slow) == ring_all_reduce_ns(
        8, 64 * MiB, 8, half, 100
    )  # the slowest link sets the pace
    assert 1.95 < max(slow) / max(idle) < 2.0
    # a change that starts after the collective has no effect on it
    late = _all_reduce_ends(
        data, Algo.RING, 8, inject=lambda n: n.set_link(3, 4, LinkParams(25 * GB, 1_000), 10**12)
    )
    assert late == idle


def test_dead_link_reforms_the_ring_on_full_mesh() -> None:
    data = np.arange(8 * 64, dtype=np.float32)
    idle = _all_reduce_ends(data, Algo.RING, 4)
    down = frozenset({(2, 3)})
    assert make_topology(TopologyKind.FULL_MESH, 8).ring_order(GROUP, down) != GROUP

    def kill(n: NetworkView) -> None:
        n.link_down(2, 3, 0)

    transports = make_inproc_transports(GROUP, _params())
    for t in transports.values():
        kill(t.network)
    out = run_group(
        GROUP,
        lambda t: all_reduce(t, GROUP, data, 0, algo=Algo.RING, chunks=4),
        _params(),
        transports=transports,
    )
    assert [end for _, end in out] == idle  # the re-formed ring uses direct links only
    for got, _ in out:
        np.testing.assert_array_equal(got, 8 * data)
    assert transports[2].network.link(2, 3).free_ns == 0  # never used


def test_dead_link_is_routed_around_by_oneshot() -> None:
    size_bytes = 64 * KiB
    data = SymbolicTensor((size_bytes // 4,), "float32")
    ends = _all_reduce_ends(data, Algo.ONESHOT, 1, inject=lambda n: n.link_down(2, 3, 0))
    t = transfer_ns(size_bytes, LINK.bw_bytes_per_s) + 100
    direct, two_hops = t + LINK.latency_ns, 2 * (t + LINK.latency_ns)
    assert ends[3] == two_hops  # 2 -> 0 -> 3, store-and-forward
    # socket 2 sends to 3 first (rotated order), so its own frame to 0 queues behind on 2 -> 0
    assert ends[0] == 2 * t + LINK.latency_ns
    assert [e for r, e in enumerate(ends) if r not in (0, 3)] == [direct] * 6


def test_no_route_left_names_the_links() -> None:
    params = _params(TopologyKind.RING)

    def cut(n: NetworkView) -> None:
        for a, b in ((1, 2), (2, 1), (5, 6), (6, 5)):
            n.link_down(a, b, 0)

    data = SymbolicTensor((1024,), "float32")
    with pytest.raises(LinkDownError, match=r"1->2.*5->6"):  # no ring: every member raises at its start
        _all_reduce_ends(data, Algo.RING, 1, inject=cut, params=params)
    # one-shot: a frame with no route is lost (a raise would leave its receiver waiting);
    # every rank needs a frame from the other half, so every rank ends lost-marked at 0 ns
    assert _all_reduce_ends(data, Algo.ONESHOT, 1, inject=cut, params=params) == [LOST_NS] * 8


@pytest.mark.slow
def test_more_chunks_help_until_overhead_dominates() -> None:
    data = SymbolicTensor((256 * KiB,), "float32")  # 1 MiB
    counts = [1, 2, 4, 8, 16, 32, 64]
    times = [max(_all_reduce_ends(data, Algo.RING, k)) for k in counts]
    best = int(np.argmin(times))
    assert 0 < best < len(counts) - 1, times  # an interior minimum
    assert times[0] > times[best] < times[-1]
    assert times[best:] == sorted(times[best:])


@pytest.mark.slow
def test_symbolic_and_real_agree_under_injection() -> None:
    def inject(n: NetworkView) -> None:
        n.link_down(1, 2, 0)
        n.set_link(5, 6, LinkParams(10 * GB, 4_000), 0)

    for algo in (Algo.RING, Algo.ONESHOT, Algo.TREE):
        real = _all_reduce_ends(np.ones(3000, np.float16), algo, 3, inject=inject)
        sym = _all_reduce_ends(SymbolicTensor((3000,), "float16"), algo, 3, inject=inject)
        assert real == sym


@pytest.mark.slow
def test_back_to_back_collectives_and_determinism() -> None:
    data = SymbolicTensor((64 * KiB,), "float32")

    async def twice(t: Transport) -> tuple[int, int]:
        _, end1 = await all_reduce(t, GROUP, data, 0, algo=Algo.RING, chunks=4)
        _, end2 = await all_reduce(t, GROUP, data, end1, algo=Algo.RING, chunks=4)
        return end1, end2

    first = run_group(GROUP, twice, _params())
    assert first == run_group(GROUP, twice, _params())
    end1, end2 = first[0]
    assert end2 - end1 == end1  # links are idle again when the second one starts


def test_uneven_start_times_wait_for_the_last_rank() -> None:
    data = SymbolicTensor((8 * 1024,), "float32")
    out = run_group(
        GROUP,
        lambda t: all_reduce(t, GROUP, data, 1_000 * t.rank, algo=Algo.ONESHOT, chunks=1),
        _params(),
    )
    t = transfer_ns(32 * KiB, LINK.bw_bytes_per_s) + 100
    assert [end for _, end in out] == [7_000 + t + LINK.latency_ns] * 7 + [
        max(7_000, 6_000 + t + LINK.latency_ns)
    ]


def test_selector_picks_the_fastest_prediction() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    ring = make_topology(TopologyKind.RING, 8)
    p = _params()
    assert select_algo(CollectiveKind.ALL_REDUCE, 8 * KiB, GROUP, mesh, p) == (Algo.ONESHOT, 1)
    assert select_algo(CollectiveKind.ALL_REDUCE, 8 * KiB, GROUP, ring, p)[0] is Algo.ONESHOT
    algo, k = select_algo(CollectiveKind.ALL_REDUCE, 64 * MiB, GROUP, ring, p)
    assert algo is Algo.RING
    for other in (Algo.ONESHOT, Algo.TREE):
        assert predict_ns(
            CollectiveKind.ALL_REDUCE, other, 64 * MiB, GROUP, ring, p, 1
        ) > predict_ns(CollectiveKind.ALL_REDUCE, algo, 64 * MiB, GROUP, ring, p, k)


@pytest.mark.slow
def test_explicit_ring_without_chunks_uses_the_profile_default() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    fixed = P2PParams(TopologyKind.FULL_MESH, LINK, 100, 1 << 30, 5, 5.0, LINK)
    data = SymbolicTensor((8 * 5 * 100,), "float32")
    ends = _all_reduce_ends(data, Algo.RING, 0, params=fixed)
    assert (
        ends
        == [predict_ns(CollectiveKind.ALL_REDUCE, Algo.RING, data.nbytes, GROUP, mesh, fixed, 5)]
        * 8
    )
    tuned = _all_reduce_ends(data, Algo.ONESHOT, 0, params=fixed)  # not a ring: tuned, K = 1
    assert (
        tuned
        == [predict_ns(CollectiveKind.ALL_REDUCE, Algo.ONESHOT, data.nbytes, GROUP, mesh, fixed, 1)]
        * 8
    )


def test_auto_time_equals_the_selected_prediction() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    for size_bytes in (8 * KiB, 1 * MiB):
        algo, k = select_algo(CollectiveKind.ALL_REDUCE, size_bytes, GROUP, mesh, _params())
        ends = _all_reduce_ends(SymbolicTensor((size_bytes // 2,), "bfloat16"), Algo.AUTO, 0)
        predicted = predict_ns(
            CollectiveKind.ALL_REDUCE, algo, size_bytes, GROUP, mesh, _params(), k
        )
        assert ends == [predicted] * 8


def test_members_that_disagree_on_the_ring_time_out_instead_of_mixing_data() -> None:
    params = P2PParams(TopologyKind.FULL_MESH, LINK, 100, 1 << 30, 0, 0.3, LINK)
    transports = make_inproc_transports(GROUP, params)
    transports[0].network.link_down(2, 3, 0)  # only socket 0 was told: it forms another ring
    data = np.ones(64, np.float32)
    with pytest.raises(P2PTimeoutError):
        run_group(
            GROUP,
            lambda t: all_reduce(t, GROUP, data, 0, algo=Algo.RING, chunks=2),
            params,
            transports=transports,
        )
