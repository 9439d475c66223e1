"""Wiring of the P2P fabric: which directed links exist, routes, ring orders.

Algorithms ask a topology for routes and ring orders and never look at the
wiring themselves (docs/architecture.md "Algorithms and topologies are separate"):
adding a topology is one class and one registry entry.

Nodes ``0 .. n_sockets-1`` are sockets; a node index ``>= n_sockets`` is a
virtual node (the switch), which forwards but never sends or receives data of
its own. A link is a directed pair ``(src, dst)``. Every search here is
deterministic: shortest paths with ties broken towards the lowest node
indices, so the same inputs give the same route on every socket and every run.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from itertools import pairwise

from sn40l_emu.errors import LinkDownError
from sn40l_emu.fabric.params import TopologyKind

DirectedLink = tuple[int, int]
NO_DOWN: frozenset[DirectedLink] = frozenset()

#: Bound on the depth-first ring search (it is exponential only in pathological
#: failure patterns); past it the greedy fallback is used. Deterministic either way.
_RING_SEARCH_BUDGET = 100_000


def _describe(down_links: frozenset[DirectedLink]) -> str:
    if not down_links:
        return "no links are down"
    return "down links: " + ", ".join(f"{a}->{b}" for a, b in sorted(down_links))


class Topology(ABC):
    """Directed links between ``n_sockets`` sockets (plus virtual nodes), routing, ring orders."""

    kind: TopologyKind

    def __init__(self, n_sockets: int) -> None:
        if n_sockets < 1:
            raise ValueError(f"n_sockets must be >= 1, got {n_sockets}")
        self.n_sockets = n_sockets
        links = sorted(set(self._build_links()))
        for a, b in links:
            if a == b or min(a, b) < 0 or max(a, b) >= self.n_nodes:
                raise ValueError(f"{type(self).__name__}: bad link {a}->{b}")
        self.links: tuple[DirectedLink, ...] = tuple(links)
        self._link_set = frozenset(links)
        out: dict[int, list[int]] = {v: [] for v in range(self.n_nodes)}
        for a, b in links:
            out[a].append(b)
        self._out = {v: tuple(sorted(ns)) for v, ns in out.items()}
        # routes and rings are pure functions of (wiring, down links): memoised
        self._route_memo: dict[tuple[int, int, frozenset[DirectedLink]], tuple[DirectedLink, ...]] = {}
        self._ring_memo: dict[tuple[tuple[int, ...], frozenset[DirectedLink]], tuple[int, ...]] = {}

    @property
    def n_nodes(self) -> int:
        """Sockets plus virtual nodes."""
        return self.n_sockets + self.n_virtual

    @property
    def n_virtual(self) -> int:
        return 0

    @property
    def scale_out_links(self) -> frozenset[DirectedLink]:
        """Links between two nodes of a multi-node system (they use ``P2PParams.scale_out``)."""
        return frozenset()

    @abstractmethod
    def _build_links(self) -> Iterable[DirectedLink]:
        """Every directed link of this wiring."""

    def has_link(self, src: int, dst: int) -> bool:
        return (src, dst) in self._link_set

    def neighbours(self, node: int) -> tuple[int, ...]:
        """Nodes reachable over one outgoing link, ascending."""
        return self._out[node]

    def _check_socket(self, s: int) -> None:
        if not 0 <= s < self.n_sockets:
            raise ValueError(f"socket {s} out of range 0..{self.n_sockets - 1}")

    def link_cost(self, link: DirectedLink) -> int:
        """Routing weight of a link: 1, more for scale-out links (see :class:`MultiNode`)."""
        return 1

    def route(
        self, src: int, dst: int, down_links: frozenset[DirectedLink] = NO_DOWN
    ) -> list[DirectedLink]:
        """Cheapest path of links from ``src`` to ``dst`` avoiding ``down_links``.

        Dijkstra on ``link_cost`` (hop count inside a node) with the heap keyed
        by (cost, node): among equal-cost paths the one through the lowest
        indices wins. Raises :class:`LinkDownError` naming ``src``, ``dst`` and
        the down links when no route is left.
        """
        key = (src, dst, down_links)
        cached = self._route_memo.get(key)
        if cached is not None:
            return list(cached)
        path = self._dijkstra(src, dst, down_links)
        if len(self._route_memo) > 100_000:
            self._route_memo.clear()
        self._route_memo[key] = tuple(path)
        return path

    def _dijkstra(self, src: int, dst: int, down_links: frozenset[DirectedLink]) -> list[DirectedLink]:
        self._check_socket(src)
        self._check_socket(dst)
        if src == dst:
            return []
        best = {src: 0}
        parent: dict[int, int] = {}
        heap = [(0, src)]
        done: set[int] = set()
        while heap:
            cost, node = heapq.heappop(heap)
            if node in done:
                continue
            if node == dst:
                path = [dst]
                while path[-1] != src:
                    path.append(parent[path[-1]])
                path.reverse()
                return list(pairwise(path))
            done.add(node)  # virtual nodes (the switch) forward like sockets do
            for nxt in self._out[node]:
                if nxt in done or (node, nxt) in down_links:
                    continue
                new = cost + self.link_cost((node, nxt))
                if new < best.get(nxt, new + 1):
                    best[nxt] = new
                    parent[nxt] = node
                    heapq.heappush(heap, (new, nxt))
        raise LinkDownError(src, dst, _describe(down_links))

    def hops(self, src: int, dst: int, down_links: frozenset[DirectedLink] = NO_DOWN) -> int:
        """Number of links on the route from ``src`` to ``dst``."""
        return len(self.route(src, dst, down_links))

    def ring_order(
        self, group: Sequence[int], down_links: frozenset[DirectedLink] = NO_DOWN
    ) -> tuple[int, ...]:
        """A cyclic order of ``group`` whose consecutive pairs are direct, live links if possible.

        Depth-first search starting at ``group[0]`` that tries the remaining
        members in group order, so an intact full mesh (or a ring topology over
        consecutive sockets) gives the identity order, and a dead link makes
        the ring re-form around it deterministically. When no all-direct ring
        exists, a greedy nearest-neighbour order (hop count, ties by group
        order) is used, whose pairs route over several hops; if some pair has
        no route at all, :class:`LinkDownError` names it.
        """
        members = tuple(group)
        key = (members, down_links)
        cached = self._ring_memo.get(key)
        if cached is not None:
            return cached
        for s in members:
            self._check_socket(s)
        if len(set(members)) != len(members):
            raise ValueError(f"group has repeated sockets: {members}")
        if len(members) <= 1:
            return members
        found = self._direct_ring(members, down_links)
        if found is None:
            found = self._greedy_ring(members, down_links)
        self._ring_memo[key] = found  # pure function of the wiring: safe to keep
        return found

    def _usable(self, a: int, b: int, down_links: frozenset[DirectedLink]) -> bool:
        return (a, b) in self._link_set and (a, b) not in down_links

    def _direct_ring(
        self, members: tuple[int, ...], down_links: frozenset[DirectedLink]
    ) -> tuple[int, ...] | None:
        n = len(members)
        if n == 2:
            a, b = members
            ok = self._usable(a, b, down_links) and self._usable(b, a, down_links)
            return members if ok else None
        succ = {
            a: [b for b in members if b != a and self._usable(a, b, down_links)] for a in members
        }
        if any(not succ[a] for a in members):
            return None
        first = members[0]
        order = [first]
        used = {first}
        budget = [_RING_SEARCH_BUDGET]

        def extend() -> bool:
            if len(order) == n:
                return self._usable(order[-1], first, down_links)
            budget[0] -= 1
            if budget[0] < 0:
                return False
            for nxt in succ[order[-1]]:
                if nxt in used:
                    continue
                order.append(nxt)
                used.add(nxt)
                if extend():
                    return True
                order.pop()
                used.discard(nxt)
            return False

        return tuple(order) if extend() else None

    def _greedy_ring(
        self, members: tuple[int, ...], down_links: frozenset[DirectedLink]
    ) -> tuple[int, ...]:
        rank = {s: i for i, s in enumerate(members)}
        order = [members[0]]
        left = set(members[1:])
        while left:
            cur = order[-1]
            best: tuple[int, int, int] | None = None
            for cand in left:
                try:
                    h = self.hops(cur, cand, down_links)
                except LinkDownError:
                    continue
                key = (h, rank[cand], cand)
                if best is None or key < best:
                    best = key
            if best is None:
                # Nothing reachable from cur: name the first unreachable pair.
                raise LinkDownError(cur, min(left, key=rank.__getitem__), _describe(down_links))
            order.append(best[2])
            left.discard(best[2])
        for a, b in zip(order, order[1:] + order[:1], strict=True):
            self.route(a, b, down_links)  # raises LinkDownError naming the pair
        return tuple(order)


class FullMesh(Topology):
    """Every socket has a direct link to every other one (docs/model.md §3 default: 7 per socket).

    ::

        0 ── 1
        │ ╲╱ │     n = 4 drawn; every pair is wired,
        │ ╱╲ │     one link per direction
        3 ── 2
    """

    kind = TopologyKind.FULL_MESH

    def _build_links(self) -> Iterable[DirectedLink]:
        n = self.n_sockets
        return [(a, b) for a in range(n) for b in range(n) if a != b]


class Ring(Topology):
    """Bidirectional ring: socket i is wired to i-1 and i+1 (mod n), both directions.

    ::

        0 ⇄ 1 ⇄ 2 ⇄ 3
        ⇅           ⇅
        7 ⇄ 6 ⇄ 5 ⇄ 4
    """

    kind = TopologyKind.RING

    def _build_links(self) -> Iterable[DirectedLink]:
        n = self.n_sockets
        if n < 2:
            return []
        links = set()
        for a in range(n):
            b = (a + 1) % n
            links.add((a, b))
            links.add((b, a))
        return links


def torus_dims(n_sockets: int) -> tuple[int, int]:
    """(rows, cols) with rows the largest divisor <= sqrt(n): 8 -> 2x4, 16 -> 4x4, 6 -> 2x3."""
    rows = max(d for d in range(1, int(n_sockets**0.5) + 1) if n_sockets % d == 0)
    return rows, n_sockets // rows


class Torus2D(Topology):
    """2-D torus, rows x cols (``torus_dims``), wrap-around in both dimensions.

    Socket ``r * cols + c`` links to its four neighbours (both directions);
    a dimension of size 2 has a single neighbour, of size 1 none. 2x4::

        ┌─ 0 ⇄ 1 ⇄ 2 ⇄ 3 ─┐   (3 wraps to 0)
        │  ⇅   ⇅   ⇅   ⇅  │
        └─ 4 ⇄ 5 ⇄ 6 ⇄ 7 ─┘   (7 wraps to 4)
    """

    kind = TopologyKind.TORUS_2D

    def _build_links(self) -> Iterable[DirectedLink]:
        rows, cols = torus_dims(self.n_sockets)
        links = set()
        for r in range(rows):
            for c in range(cols):
                a = r * cols + c
                for b in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                    if a != b:
                        links.add((a, b))
                        links.add((b, a))
        return links


class Switch(Topology):
    """Every socket has an uplink to one switch and a downlink from it.

    The switch is the virtual node ``n_sockets``; a route between two sockets
    is socket -> switch -> socket (two hops, store-and-forward per chunk)::

            0   1   2   3
             ╲  │   │  ╱
              [switch=8]
             ╱  │   │  ╲
            4   5   6   7
    """

    kind = TopologyKind.SWITCH

    @property
    def n_virtual(self) -> int:
        return 1

    def _build_links(self) -> Iterable[DirectedLink]:
        hub = self.n_sockets
        return [link for s in range(self.n_sockets) for link in ((s, hub), (hub, s))]


TOPOLOGIES: dict[TopologyKind, type[Topology]] = {
    TopologyKind.FULL_MESH: FullMesh,
    TopologyKind.RING: Ring,
    TopologyKind.TORUS_2D: Torus2D,
    TopologyKind.SWITCH: Switch,
}


class MultiNode(Topology):
    """Several nodes of ``sockets_per_node`` sockets (TP16 = 2 x 8) joined by scale-out links.

    Inside a node the wiring is the node's topology; between nodes every
    cross-node pair of sockets has a direct scale-out link per direction (the
    scale-out fabric is not public; modelling it as full bipartite keeps the
    route one hop and puts its cost in ``P2PParams.scale_out``). Sockets
    ``k*spn .. (k+1)*spn-1`` are node k; the virtual nodes of node k (its
    switch) are numbered after all sockets::

        node 0: 0..7  ══ scale-out (every pair) ══  node 1: 8..15
    """

    def __init__(self, kind: TopologyKind, n_sockets: int, sockets_per_node: int) -> None:
        if sockets_per_node < 1 or n_sockets % sockets_per_node:
            raise ValueError(
                f"n_sockets {n_sockets} must be a multiple of sockets_per_node {sockets_per_node}"
            )
        self.kind = kind
        self.sockets_per_node = sockets_per_node
        self.node_topology = TOPOLOGIES[kind](sockets_per_node)
        self._cross: set[DirectedLink] = set()
        self._n_virtual = (n_sockets // sockets_per_node) * self.node_topology.n_virtual
        super().__init__(n_sockets)
        self._scale_out = frozenset(self._cross)

    @property
    def n_virtual(self) -> int:
        return self._n_virtual

    @property
    def scale_out_links(self) -> frozenset[DirectedLink]:
        return self._scale_out

    def link_cost(self, link: DirectedLink) -> int:
        """A scale-out hop costs more than any path inside a node, so traffic between two
        sockets of one node never detours through another node."""
        return self.n_nodes if link in self._cross else 1

    def node_of(self, socket: int) -> int:
        return socket // self.sockets_per_node

    def _global(self, node: int, local: int) -> int:
        spn = self.sockets_per_node
        if local < spn:
            return node * spn + local
        per = self.node_topology.n_virtual
        return self.n_sockets + node * per + (local - spn)

    def _build_links(self) -> Iterable[DirectedLink]:
        n_nodes = self.n_sockets // self.sockets_per_node
        links = set()
        for k in range(n_nodes):
            for a, b in self.node_topology.links:
                links.add((self._global(k, a), self._global(k, b)))
        for a in range(self.n_sockets):
            for b in range(self.n_sockets):
                if self.node_of(a) != self.node_of(b):
                    self._cross.add((a, b))
        return links | self._cross


def make_topology(kind: TopologyKind, n_sockets: int, sockets_per_node: int = 8) -> Topology:
    """The topology of ``kind`` over ``n_sockets``; more than one node adds scale-out links."""
    if n_sockets <= sockets_per_node:
        return TOPOLOGIES[kind](n_sockets)
    return MultiNode(kind, n_sockets, sockets_per_node)
