"""Algorithm and chunk-count selection from the closed forms, like NCCL's tuner.

Every candidate (algorithm registered for the collective x chunk count) gets
its predicted time from :mod:`sn40l_emu.collectives.closed_form` on the
routes the topology gives the group; the fastest wins, ties going to the
earlier algorithm in ``ALGO_PREFERENCE`` and then to fewer chunks, so every
rank makes the same choice. The selector sees nominal link parameters and the
down links it is given, not injected bandwidth changes (those show up in the
measured time, as they would on hardware with a static tuner).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from sn40l_emu.collectives.closed_form import (
    RouteCost,
    chain_frame_ns,
    direct_ns,
    halving_ns,
    ring_ns,
)
from sn40l_emu.collectives.tree import binomial_depth, halving_distances, is_power_of_two
from sn40l_emu.fabric.params import LinkParams, P2PParams
from sn40l_emu.fabric.topology import NO_DOWN, DirectedLink, Topology
from sn40l_emu.program import Algo, CollectiveKind

#: Deterministic tie-break between algorithms of equal predicted time.
ALGO_PREFERENCE: tuple[Algo, ...] = (Algo.ONESHOT, Algo.TREE, Algo.RING)

#: The tuner never cuts a frame into chunks smaller than this (explicit ``chunks`` may).
MIN_AUTO_CHUNK_BYTES = 256
#: Largest chunk count the tuner tries.
MAX_AUTO_CHUNKS = 64

#: Which algorithms exist for which collective (the implementations' registry mirrors it).
CANDIDATES: dict[CollectiveKind, tuple[Algo, ...]] = {
    CollectiveKind.ALL_REDUCE: (Algo.ONESHOT, Algo.TREE, Algo.RING),
    CollectiveKind.REDUCE_SCATTER: (Algo.ONESHOT, Algo.TREE, Algo.RING),
    CollectiveKind.ALL_GATHER: (Algo.ONESHOT, Algo.TREE, Algo.RING),
    CollectiveKind.BROADCAST: (Algo.ONESHOT, Algo.TREE, Algo.RING),
}


def _link_params(topology: Topology, params: P2PParams, link: DirectedLink) -> LinkParams:
    return params.scale_out if link in topology.scale_out_links else params.link


def pattern_cost(
    topology: Topology,
    params: P2PParams,
    pairs: Iterable[tuple[int, int]],
    down_links: frozenset[DirectedLink] = NO_DOWN,
) -> RouteCost:
    """Worst route over ``pairs`` (sender, receiver): most hops, slowest link, largest latency,
    and the most frames one sender puts on one link. Raises LinkDownError if a pair has no route."""
    hops, load = 1, 1
    bw: int | None = None
    lat = 0
    per_sender: dict[int, Counter[DirectedLink]] = {}
    for src, dst in pairs:
        route = topology.route(src, dst, down_links)
        hops = max(hops, len(route))
        per_sender.setdefault(src, Counter()).update(route)
        for link in route:
            lp = _link_params(topology, params, link)
            bw = lp.bw_bytes_per_s if bw is None else min(bw, lp.bw_bytes_per_s)
            lat = max(lat, lp.latency_ns)
    for counts in per_sender.values():
        load = max(load, max(counts.values(), default=1))
    if bw is None:
        return RouteCost.direct(params.link)
    return RouteCost(hops, bw, lat, load)


def uses_ring(kind: CollectiveKind, algo: Algo, n: int) -> bool:
    """Whether ``algo`` runs over the topology's ring order (TREE falls back to it)."""
    if algo is Algo.RING:
        return True
    return algo is Algo.TREE and kind is not CollectiveKind.BROADCAST and not is_power_of_two(n)


def _ring_pairs(order: Sequence[int]) -> list[tuple[int, int]]:
    return [(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]


@lru_cache(maxsize=4096)
def _routes(
    kind: CollectiveKind,
    algo: Algo,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    down_links: frozenset[DirectedLink],
    root: int,
) -> RouteCost | dict[int, RouteCost]:
    """The route costs a closed form needs; independent of size and chunks, so the tuner's
    sweep over chunk counts computes them once (they walk O(N^2) routes for one-shot)."""
    n = len(group)
    if algo is Algo.RING:
        order = topology.ring_order(group, down_links)
        return pattern_cost(topology, params, _ring_pairs(order), down_links)
    if algo is Algo.ONESHOT:
        senders = (root,) if kind is CollectiveKind.BROADCAST else group
        pairs = [(a, b) for a in senders for b in group if a != b]
        return pattern_cost(topology, params, pairs, down_links)
    if kind is CollectiveKind.BROADCAST:
        r = group.index(root)
        pairs = [
            (group[(r + p) % n], group[(r + p + (1 << k)) % n])
            for p in range(n)
            for k in range(n.bit_length())
            if p < (1 << k) and p + (1 << k) < n
        ]
        return pattern_cost(topology, params, pairs, down_links)
    return {
        d: pattern_cost(topology, params, [(group[i], group[i ^ d]) for i in range(n)], down_links)
        for d in halving_distances(n)
    }


@lru_cache(maxsize=4096)
def _predict(
    kind: CollectiveKind,
    algo: Algo,
    size_bytes: int,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    chunks: int,
    down_links: frozenset[DirectedLink],
    root: int,
) -> int:
    n = len(group)
    o = params.chunk_overhead_ns
    if n <= 1:
        return 0
    if uses_ring(kind, algo, n):
        algo = Algo.RING  # TREE on a non-power-of-two group falls back the same way
    if algo not in (Algo.RING, Algo.ONESHOT, Algo.TREE):
        raise ValueError(f"no closed form for {kind.value} with {algo.value}")
    routes = _routes(kind, algo, group, topology, params, down_links, root)
    if isinstance(routes, dict):  # tree reduce-scatter / all-gather / all-reduce: halving steps
        one_way = halving_ns(n, size_bytes, chunks, routes, o)
        return 2 * one_way if kind is CollectiveKind.ALL_REDUCE else one_way
    route = routes
    if algo is Algo.RING:
        if kind is CollectiveKind.BROADCAST:
            return chain_frame_ns((n - 1) * route.hops, size_bytes, chunks, route, o)
        steps = 2 * (n - 1) if kind is CollectiveKind.ALL_REDUCE else n - 1
        return ring_ns(steps, n, size_bytes, chunks, route, o)
    if algo is Algo.ONESHOT:
        frame = (
            size_bytes
            if kind in (CollectiveKind.ALL_REDUCE, CollectiveKind.BROADCAST)
            else -(-size_bytes // n)
        )
        return direct_ns(frame, chunks, route, o)
    return chain_frame_ns(binomial_depth(n) * route.hops, size_bytes, chunks, route, o)


def predict_ns(
    kind: CollectiveKind,
    algo: Algo,
    size_bytes: int,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    chunks: int,
    *,
    down_links: frozenset[DirectedLink] = NO_DOWN,
    root: int | None = None,
) -> int:
    """Predicted duration (ns) of one collective; ``size_bytes`` is the full buffer:
    the all-reduce / broadcast buffer, the reduce-scatter input, the all-gather result."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    return _predict(
        kind,
        algo,
        int(size_bytes),
        tuple(group),
        topology,
        params,
        chunks,
        down_links,
        group[0] if root is None else root,
    )


def chunk_candidates(
    algo: Algo, kind: CollectiveKind, size_bytes: int, n: int, params: P2PParams
) -> range:
    """Chunk counts the tuner tries for one algorithm."""
    if algo is Algo.TREE and kind is not CollectiveKind.BROADCAST:
        return range(1, 2)  # the closed form is exact only for K = 1 (see closed_form)
    frame = size_bytes // n if algo is Algo.RING else size_bytes
    most = max(1, min(MAX_AUTO_CHUNKS, frame // MIN_AUTO_CHUNK_BYTES))
    return range(1, most + 1)


def best_chunks(
    kind: CollectiveKind,
    algo: Algo,
    size_bytes: int,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    *,
    down_links: frozenset[DirectedLink] = NO_DOWN,
    root: int | None = None,
) -> tuple[int, int]:
    """(chunks, predicted ns) of the fastest chunk count for a fixed algorithm (fewest on ties)."""
    return _best_chunks(
        kind,
        algo,
        int(size_bytes),
        tuple(group),
        topology,
        params,
        down_links,
        group[0] if root is None else root,
    )


@lru_cache(maxsize=4096)
def _best_chunks(
    kind: CollectiveKind,
    algo: Algo,
    size_bytes: int,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    down_links: frozenset[DirectedLink],
    root: int,
) -> tuple[int, int]:
    best: tuple[int, int] | None = None
    for k in chunk_candidates(algo, kind, size_bytes, len(group), params):
        ns = _predict(kind, algo, size_bytes, group, topology, params, k, down_links, root)
        if best is None or ns < best[1]:
            best = (k, ns)
    assert best is not None
    return best


def select_algo(
    kind: CollectiveKind,
    size_bytes: int,
    group: tuple[int, ...],
    topology: Topology,
    params: P2PParams,
    *,
    down_links: frozenset[DirectedLink] = NO_DOWN,
    root: int | None = None,
) -> tuple[Algo, int]:
    """The (algorithm, chunks) with the smallest predicted time; deterministic tie-break."""
    scored = []
    for algo in CANDIDATES[kind]:
        k, ns = best_chunks(
            kind, algo, size_bytes, group, topology, params, down_links=down_links, root=root
        )
        scored.append((ns, ALGO_PREFERENCE.index(algo), k, algo))
    ns, _, k, algo = min(scored)
    return algo, k
