"""A fleet of nodes behind one global router, in virtual time: arrivals, dispatch, batches.

Each node is the single-node server of :mod:`sn40l_emu.coe.serving` (FIFO
queue, batches of up to B, never waits to fill one) with its own HBM expert
cache and its measured costs (:class:`~sn40l_emu.coe.fleet_costs.CostServer`).
The router sends each request, at its arrival, to a node that holds its expert
(:mod:`sn40l_emu.coe.fleet_policy`), by its outstanding requests (queued plus in
service). Events are kept in a heap with integer keys (time ns, kind, sequence):
a batch that ends at the time a request arrives frees its node first. The work
per request is O(log N) heap operations plus the policy's choice among the
expert's holders.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from sn40l_emu.coe.cache import CachePolicy
from sn40l_emu.coe.fleet_costs import CostServer, NodeCosts
from sn40l_emu.coe.fleet_policy import FleetPolicy, held_per_node, place_experts
from sn40l_emu.coe.serving import RequestRecord
from sn40l_emu.coe.workload import Request
from sn40l_emu.errors import ConfigError

_DONE, _ARRIVE = 0, 1


@dataclass(frozen=True)
class FleetResult:
    records: tuple[RequestRecord, ...]  # ascending request id; batch_index counts per node
    node_of: tuple[int, ...]  # per request id: the node that served it
    batches_per_node: tuple[int, ...]
    hits: int
    misses: int
    placement: tuple[tuple[int, ...], ...]


def simulate_fleet(requests: Sequence[Request], costs: NodeCosts, n_nodes: int, n_experts: int,
                   max_batch: int, policy: FleetPolicy,
                   cache_policy: CachePolicy = CachePolicy.LRU) -> FleetResult:
    """Serve ``requests`` on ``n_nodes`` identical nodes of ``costs`` (deterministic)."""
    if not requests:
        raise ConfigError("requests", "[]", "at least one request")
    if not 1 <= max_batch <= costs.max_batch:
        raise ConfigError("batch", max_batch, f"1..{costs.max_batch} (the measured batch sizes)")
    slots = costs.cache_bytes // costs.shard_bytes if costs.shard_bytes else 0
    if slots < max_batch and not costs.gpu:
        raise ConfigError("batch", max_batch, f"at most the {slots} experts the HBM cache holds at once")
    if cache_policy is CachePolicy.OPT:
        raise ConfigError("cache policy", cache_policy.value, "lru or lfu in a fleet")
    placement = place_experts(policy, n_experts, n_nodes, costs.total_experts,
                              [r.expert for r in requests])
    held = held_per_node(placement, n_nodes)
    servers = [CostServer(costs, cache_policy, held_experts=h) for h in held]
    queues: list[deque[Request]] = [deque() for _ in range(n_nodes)]
    busy = [False] * n_nodes
    outstanding = [0] * n_nodes
    batches = [0] * n_nodes
    heap: list[tuple[int, int, int, int]] = []  # (time ns, kind, seq, node)
    in_service: dict[int, list[Request]] = {}
    records: list[RequestRecord] = []
    node_of = [0] * (max(r.id for r in requests) + 1)
    hits = misses = 0
    seq = 0

    def start(node: int, now: int) -> None:
        nonlocal seq, hits, misses
        q = queues[node]
        batch = [q.popleft() for _ in range(min(max_batch, len(q)))]
        timing = servers[node].serve(batch)
        hits += timing.hits or 0
        misses += timing.misses or 0
        firsts = timing.first_token_offsets_ns or (None,) * len(batch)
        for r, off, first in zip(batch, timing.completion_offsets_ns, firsts, strict=True):
            records.append(RequestRecord(r.id, r.expert, r.arrival_ns, now, now + off, batches[node],
                                         None if first is None else now + first, r.output_tokens))
        batches[node] += 1
        busy[node] = True
        in_service[node] = batch
        heapq.heappush(heap, (now + timing.total_ns, _DONE, seq, node))
        seq += 1

    def finish(now: int, node: int) -> None:
        outstanding[node] -= len(in_service.pop(node))
        busy[node] = False
        if queues[node]:
            start(node, now)

    for r in sorted(requests, key=lambda x: (x.arrival_ns, x.id)):
        while heap and heap[0][0] <= r.arrival_ns:
            t, _, _, node = heapq.heappop(heap)
            finish(t, node)
        if not 0 <= r.expert < n_experts:
            raise ConfigError("request expert", r.expert, f"0..{n_experts - 1}")
        holders = placement[r.expert]
        node = holders[0] if len(holders) == 1 else min(holders, key=lambda n: (outstanding[n], n))
        node_of[r.id] = node
        queues[node].append(r)
        outstanding[node] += 1
        if not busy[node]:
            start(node, r.arrival_ns)
    while heap:
        t, _, _, node = heapq.heappop(heap)
        finish(t, node)
    return FleetResult(tuple(sorted(records, key=lambda x: x.request_id)), tuple(node_of),
                       tuple(batches), hits, misses, tuple(placement))
