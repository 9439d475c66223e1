"""NetworkView: per-hop store-and-forward, injections, scale-out parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sn40l_emu.errors import LinkDownError
from sn40l_emu.fabric.link import LOST_NS
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.fabric.topology import make_topology
from sn40l_emu.units import GB


def _params(kind: TopologyKind = TopologyKind.FULL_MESH, overhead_ns: int = 0) -> P2PParams:
    # 1 GB/s = 1 byte per ns keeps the arithmetic readable
    return P2PParams(
        kind, LinkParams(1 * GB, 100), overhead_ns, 1 << 30, 0, 5.0, LinkParams(GB // 4, 1000)
    )


def _view(
    kind: TopologyKind = TopologyKind.FULL_MESH, n: int = 8, owner: int = 0, **kw: int
) -> NetworkView:
    p = _params(kind, **kw)
    return NetworkView(owner, make_topology(kind, n), p)


def test_direct_link_and_overhead() -> None:
    net = _view(overhead_ns=5)
    arrive = net.transmit(3, np.array([10, 10, 10]), np.array([0, 0, 100]))
    assert arrive.tolist() == [115, 130, 215]
    assert net.link(0, 3).free_ns == 115 and net.link(0, 1).free_ns == 0


def test_store_and_forward_pipelines_over_hops() -> None:
    net = _view(TopologyKind.SWITCH)
    arrive = net.transmit(5, np.array([10, 10, 10]), np.zeros(3, np.int64))
    # uplink done at 10, 20, 30 (+100 latency), downlink serves each as it comes
    assert arrive.tolist() == [10 + 100 + 10 + 100, 20 + 100 + 10 + 100, 30 + 100 + 10 + 100]
    # a second frame to another socket queues on the shared uplink only
    second = net.transmit(6, np.array([10]), np.zeros(1, np.int64))
    assert second.tolist() == [40 + 100 + 10 + 100]


def test_injections_bandwidth_down_up() -> None:
    net = _view()
    net.set_link(0, 1, LinkParams(GB // 2, 100), from_ns=1_000)
    assert net.transmit(1, np.array([10]), np.array([0])).tolist() == [110]
    assert net.transmit(1, np.array([10]), np.array([1_000])).tolist() == [1_120]
    net.link_down(0, 2, from_ns=5_000)
    assert net.down_links(4_999) == frozenset() and net.down_links(5_000) == {(0, 2)}
    assert net.transmit(2, np.array([10]), np.array([4_000])).tolist() == [4_110]
    # after it goes down: 0 -> 1 -> 2 (two hops, and 0->1 is now at half bandwidth)
    assert net.route(2, 5_000) == [(0, 1), (1, 2)]
    assert net.transmit(2, np.array([10]), np.array([5_000])).tolist() == [
        5_000 + 20 + 100 + 10 + 100
    ]
    net.link_up(0, 2, from_ns=9_000)
    assert net.route(2, 9_000) == [(0, 2)]


def test_no_route_left_raises_and_a_frame_without_route_is_lost() -> None:
    net = _view(TopologyKind.RING)
    for a, b in ((0, 1), (1, 0), (0, 7), (7, 0)):
        net.link_down(a, b, 0)
    with pytest.raises(LinkDownError, match="socket 0 to socket 4"):
        net.route(4, 0)
    # a send cannot raise (its peers would wait for it): the frame is lost where it starts
    assert net.transmit(4, np.array([1]), np.array([70])).tolist() == [LOST_NS + 70]
    assert net.take_losses() == [((0, 4), 70)]


def test_a_frame_on_a_link_when_it_goes_down_is_lost_at_that_ns() -> None:
    net = _view()
    net.link_down(0, 1, from_ns=150, routing=False)  # physically down; routes still use it
    assert net.transmit(1, np.array([100, 100]), np.array([100, 100])).tolist() == [LOST_NS + 150] * 2
    assert net.take_losses() == [((0, 1), 150)]
    # handed to the link after it went down: lost too, marked with when the link went down
    assert net.transmit(1, np.array([10]), np.array([400])).tolist() == [LOST_NS + 150]
    # a lost-marked (ghost) frame passes on unchanged and occupies nothing
    assert net.transmit(2, np.array([10]), np.array([LOST_NS + 150])).tolist() == [LOST_NS + 150]
    assert net.link(0, 2).free_ns == 0


def test_scale_out_links_use_scale_out_params() -> None:
    p = _params()
    net = NetworkView(2, make_topology(p.topology, 16), p)
    assert net.transmit(11, np.array([100]), np.array([0])).tolist() == [400 + 1000]
    assert net.transmit(5, np.array([100]), np.array([0])).tolist() == [200]
    with pytest.raises(KeyError, match="no link 0->0"):
        net.link(0, 0)
    with pytest.raises(ValueError):
        NetworkView(16, make_topology(p.topology, 16), p)
