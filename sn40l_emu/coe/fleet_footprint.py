"""The footprint study: the smallest fleet that meets a p99 latency target (SN40L paper, Fig. 13).

For a composition of E experts and an arrival stream, the fleet of N nodes
meets the target when every request completes and the p99 latency (nearest
rank) is at most the target. N is searched by doubling from 1 and then
bisecting between the last miss and the first hit, which assumes that adding
nodes never raises p99 (the sizes tried and their p99 are reported with the
answer, so a reader can see the curve it walked). A fleet whose placement
cannot hold the composition counts as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sn40l_emu.coe.cache import CachePolicy
from sn40l_emu.coe.fleet_costs import NodeCosts
from sn40l_emu.coe.fleet_policy import FleetCapacityError, FleetPolicy
from sn40l_emu.coe.fleet_sim import simulate_fleet
from sn40l_emu.coe.serving import percentile_nearest_rank
from sn40l_emu.coe.workload import Request


@dataclass(frozen=True)
class FootprintPoint:
    nodes: int | None  # None: not met within max_nodes
    p99_ns: int | None  # at that fleet size
    tried: tuple[tuple[int, int | None], ...]  # (nodes, p99 ns or None when it could not hold E)


def fleet_p99(requests: Sequence[Request], costs: NodeCosts, n_nodes: int, n_experts: int,
              batch: int, policy: FleetPolicy, cache_policy: CachePolicy = CachePolicy.LRU) -> int | None:
    try:
        res = simulate_fleet(requests, costs, n_nodes, n_experts, batch, policy, cache_policy)
    except FleetCapacityError:
        return None
    return percentile_nearest_rank([r.latency_ns for r in res.records], 99)


def smallest_fleet(requests: Sequence[Request], costs: NodeCosts, n_experts: int, batch: int,
                   policy: FleetPolicy, p99_target_ns: int, max_nodes: int) -> FootprintPoint:
    tried: dict[int, int | None] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            tried[n] = fleet_p99(requests, costs, n, n_experts, batch, policy)
        p = tried[n]
        return p is not None and p <= p99_target_ns

    lo, hi = 0, 1  # lo: largest known miss (0 = none), hi: candidate
    while not ok(hi):
        lo = hi
        if hi >= max_nodes:
            return FootprintPoint(None, None, tuple(sorted(tried.items())))
        hi = min(max_nodes, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return FootprintPoint(hi, tried[hi], tuple(sorted(tried.items())))
