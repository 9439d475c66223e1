"""Topologies: wiring, shortest routes, ring orders around dead links, LinkDownError."""

from __future__ import annotations

import pytest

from sn40l_emu.errors import LinkDownError
from sn40l_emu.fabric.params import TopologyKind
from sn40l_emu.fabric.topology import TOPOLOGIES, MultiNode, make_topology, torus_dims


def _both(a: int, b: int) -> frozenset[tuple[int, int]]:
    return frozenset({(a, b), (b, a)})


def test_registry_covers_every_kind() -> None:
    assert set(TOPOLOGIES) == set(TopologyKind)
    for kind in TopologyKind:
        assert make_topology(kind, 8).kind is kind


def test_link_counts() -> None:
    assert len(make_topology(TopologyKind.FULL_MESH, 8).links) == 8 * 7
    assert len(make_topology(TopologyKind.RING, 8).links) == 16
    assert len(make_topology(TopologyKind.TORUS_2D, 8).links) == 8 * 3  # 2x4: rows of 2 share one
    assert len(make_topology(TopologyKind.TORUS_2D, 16, 16).links) == 16 * 4
    sw = make_topology(TopologyKind.SWITCH, 8)
    assert len(sw.links) == 16 and sw.n_nodes == 9
    assert torus_dims(8) == (2, 4) and torus_dims(16) == (4, 4) and torus_dims(7) == (1, 7)
    assert make_topology(TopologyKind.RING, 1).links == ()


def test_routes_and_hops() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    assert mesh.route(2, 5) == [(2, 5)] and mesh.route(3, 3) == []
    ring = make_topology(TopologyKind.RING, 8)
    assert ring.route(0, 3) == [(0, 1), (1, 2), (2, 3)]
    assert ring.route(0, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # tie: lowest index first
    assert ring.route(0, 6) == [(0, 7), (7, 6)]
    sw = make_topology(TopologyKind.SWITCH, 8)
    assert sw.route(1, 6) == [(1, 8), (8, 6)] and sw.hops(0, 7) == 2
    torus = make_topology(TopologyKind.TORUS_2D, 8)
    assert torus.hops(0, 6) == 3 and torus.hops(0, 4) == 1


def test_route_avoids_down_links_and_names_the_pair() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    assert mesh.route(2, 3, frozenset({(2, 3)})) == [(2, 0), (0, 3)]
    ring = make_topology(TopologyKind.RING, 8)
    assert ring.hops(0, 1, _both(0, 1)) == 7
    with pytest.raises(LinkDownError) as info:
        ring.route(0, 4, _both(1, 2) | _both(5, 6))
    assert info.value.src == 0 and info.value.dst == 4
    assert "1->2" in str(info.value) and "5->6" in str(info.value)
    with pytest.raises(ValueError):
        mesh.route(0, 8)


def test_ring_order_identity_when_direct() -> None:
    for kind in (TopologyKind.FULL_MESH, TopologyKind.RING):
        topo = make_topology(kind, 8)
        assert topo.ring_order(tuple(range(8))) == tuple(range(8))
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    assert mesh.ring_order((4, 5, 6, 7)) == (4, 5, 6, 7)
    assert mesh.ring_order((6, 1)) == (6, 1)
    assert mesh.ring_order((3,)) == (3,)


def test_ring_order_on_torus_uses_direct_links() -> None:
    torus = make_topology(TopologyKind.TORUS_2D, 8)
    order = torus.ring_order(tuple(range(8)))
    assert sorted(order) == list(range(8))
    assert all(torus.has_link(a, b) for a, b in zip(order, order[1:] + order[:1], strict=True))


def test_ring_order_reforms_around_a_dead_link_on_full_mesh() -> None:
    mesh = make_topology(TopologyKind.FULL_MESH, 8)
    down = frozenset({(2, 3)})
    order = mesh.ring_order(tuple(range(8)), down)
    assert order == (0, 1, 2, 4, 3, 5, 6, 7)
    pairs = set(zip(order, order[1:] + order[:1], strict=True))
    assert not pairs & down
    assert mesh.ring_order(tuple(range(8)), down) == order  # deterministic


def test_ring_order_falls_back_to_multi_hop_then_fails() -> None:
    ring = make_topology(TopologyKind.RING, 8)
    one_cut = _both(3, 4)
    order = ring.ring_order(tuple(range(8)), one_cut)
    assert sorted(order) == list(range(8))
    for a, b in zip(order, order[1:] + order[:1], strict=True):
        ring.route(a, b, one_cut)  # every pair still has a route
    with pytest.raises(LinkDownError, match="1->2"):
        ring.ring_order(tuple(range(8)), _both(1, 2) | _both(5, 6))
    # a group of non-neighbours on a ring: pairs are two hops apart
    assert ring.ring_order((0, 2, 4, 6)) == (0, 2, 4, 6)


def test_multi_node_scale_out() -> None:
    topo = make_topology(TopologyKind.FULL_MESH, 16)
    assert isinstance(topo, MultiNode)
    assert len(topo.links) == 2 * 8 * 7 + 2 * 8 * 8
    assert topo.route(3, 12) == [(3, 12)] and (3, 12) in topo.scale_out_links
    assert (3, 4) not in topo.scale_out_links
    assert topo.ring_order(tuple(range(16))) == tuple(range(16))
    sw = make_topology(TopologyKind.SWITCH, 16)
    assert sw.n_nodes == 18 and sw.route(1, 2) == [(1, 16), (16, 2)]
    assert sw.route(9, 10) == [(9, 17), (17, 10)] and sw.route(1, 10) == [(1, 10)]
    with pytest.raises(ValueError):
        make_topology(TopologyKind.RING, 12)
