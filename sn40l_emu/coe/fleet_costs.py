"""A node's serving costs, measured once per shape on its emulated sockets, then reused.

Why: serving many requests through the coordinator re-runs every prefill and
decode step on the sockets (milliseconds of wall per request); the costs are a
pure function of the shape (docs/architecture.md "Virtual time": same programs,
same nanoseconds), so they are measured once per shape by driving the node's
own :class:`~sn40l_emu.coe.coordinator.CoECoordinator` through small probe
batches, and a batch's cost is then assembled from them:

    batch_ns = load(-> router) + router_ns[b] + switch_ns[loads] + sum over its requests of
               load(-> prefill) + prefill_ns(P) + [load(prefill -> decode)]
               + sum_{i=1..T-1} decode_ns(P + i - 1)

which is the coordinator's own decomposition (router, switch, then each
(prompt, expert) pair in turn; docs/model.md §4-5). The loads are the host's
Program / Argument Load at each program switch, from the profile and the rule
of coe/program_switch.py (they depend on the request before, so they are
applied as the batch is served, never measured into a shape's cost: every
measured cost below is the sockets' time, the request's span less its
loads). Probes: a batch of b
requests for b experts not yet in HBM gives router_ns[b] and switch_ns[b]; a
batch of resident experts gives switch_ns[0]. With at most ``EXACT_POINTS``
distinct (prompt, output tokens) shapes, each is measured whole: a request
(P, 1) gives prefill_ns(P) and a request (P, T) the whole request. With more
shapes, contexts are measured on a grid of ``EXACT_POINTS`` points over their
range -- for a context c, requests (P=c, T=1) and (P=c, T=2) give prefill_ns(c)
and decode_ns(c) as the difference -- and a context between two grid points is
interpolated linearly (rounded to whole ns), stated in the result as
``interpolated``. tests/test_fleet_serving.py checks that the measured costs
give the coordinator's nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sn40l_emu.cluster.node import ManagedNode
from sn40l_emu.coe.cache import CachePolicy, ExpertCache
from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
from sn40l_emu.coe.program_switch import ROUTER, Loaded, SwitchCosts, request_switches, switch_time
from sn40l_emu.coe.serving import BatchTiming
from sn40l_emu.coe.workload import Request
from sn40l_emu.engine.layer_reuse import LayerPrograms
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.errors import ConfigError
from sn40l_emu.workload import ModelConfig

EXACT_POINTS = 48


@dataclass(frozen=True)
class NodeCosts:
    """What one node's sockets measured; enough to time any batch of requests."""

    platform: str
    max_batch: int
    router_ns: tuple[int, ...]  # index b = batch size (index 0 unused: 0)
    switch_ns: tuple[int, ...]  # index k = experts copied into HBM
    shape_ns: tuple[tuple[int, int, int, int], ...]  # (prompt, tokens, prefill ns, request ns)
    ctx_points: tuple[int, ...]  # measured contexts, ascending (grid mode; empty otherwise)
    prefill_ns: tuple[int, ...]  # per ctx point (prompt of that length)
    decode_ns: tuple[int, ...]  # per ctx point (one decode step at that context)
    cache_bytes: int  # per-socket HBM expert region
    shard_bytes: int  # per-socket expert shard
    all_in_hbm: bool  # the composition asked for is a DGX one that fits HBM: no switching
    total_experts: int  # experts the node can hold
    gpu: bool  # a DGX: experts stay in HBM while the node holds at most hbm_experts
    hbm_experts: int
    interpolated: bool  # some contexts fall between measured points
    program_load_ns: int = 0  # the profile's runtime knobs (applied per switch, coe/program_switch.py)
    argument_load_ns: int = 0
    tokenize_ns_per_token: int = 0  # admitting a batch (host runtime, as the coordinator pays it)
    schedule_ns: int = 0
    _memo: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict, compare=False,
                                                         repr=False)

    def _at(self, values: tuple[int, ...], ctx: np.ndarray) -> np.ndarray:
        return np.rint(np.interp(ctx, self.ctx_points, values)).astype(np.int64)

    def request_ns(self, prompt_len: int, output_tokens: int) -> tuple[int, int]:
        """(prefill ns, whole request ns) of one (prompt, expert) pair."""
        key = (prompt_len, output_tokens)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        if not self._memo:
            self._memo.update({(p, t): (pre, tot) for p, t, pre, tot in self.shape_ns})
            if key in self._memo:
                return self._memo[key]
        if not self.ctx_points:
            raise ConfigError("request shape", key, "a (prompt, output tokens) shape that was measured")
        pre = int(self._at(self.prefill_ns, np.array([prompt_len]))[0])
        ctx = np.arange(prompt_len, prompt_len + output_tokens - 1)
        total = pre + int(self._at(self.decode_ns, ctx).sum()) if ctx.size else pre
        self._memo[key] = (pre, total)
        return pre, total

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in (
            "platform", "max_batch", "router_ns", "switch_ns", "shape_ns", "ctx_points", "prefill_ns",
            "decode_ns", "cache_bytes", "shard_bytes", "all_in_hbm", "total_experts", "gpu",
            "hbm_experts", "interpolated", "program_load_ns", "argument_load_ns",
            "tokenize_ns_per_token", "schedule_ns")}


def context_grid(shapes: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """``EXACT_POINTS`` contexts spanning every shape's prompt and decode contexts."""
    lo = min(p for p, _ in shapes)
    hi = max(p + t - 1 for p, t in shapes)
    grid = np.unique(np.rint(np.linspace(lo, hi, EXACT_POINTS)).astype(np.int64))
    return tuple(int(x) for x in grid)


def measure_node_costs(node: ManagedNode, model: ModelConfig, n_experts: int, max_batch: int,
                       shapes: Sequence[tuple[int, int]]) -> NodeCosts:
    """Drive ``node``'s coordinator through the probe batches (see the module docstring)."""
    if not shapes:
        raise ConfigError("shapes", "[]", "at least one (prompt_len, output_tokens)")
    shapes = sorted(set(shapes))
    grid = len(shapes) > EXACT_POINTS
    points = context_grid(shapes) if grid else ()
    max_prompt = max(p for p, _ in shapes)  # the router runs a prefill of this length
    max_tokens = max(t for _, t in shapes)
    setup = CoESetup(model, n_experts, max_batch, max_prompt, max_tokens, CachePolicy.LRU)
    node.reset()  # the coordinator's usual engine: step and layer cost reuse
    reuse = CostReuse(node)
    coord = CoECoordinator(node, setup, reuse=reuse, book=LayerPrograms(ProgramBook()))
    cap = coord.capacity
    asked_all_in_hbm = coord.all_in_hbm
    slots = coord.cache.slots(coord.shard_bytes)
    if slots < 1:
        raise ConfigError("experts", n_experts, "an expert shard that fits the HBM region")
    # The probes need cold experts for every load count up to the batch size, so they run
    # on a composition larger than the HBM cache (a DGX one that fits HBM would never
    # switch, but a fleet node may hold more). Router, switch, prefill and decode costs
    # do not depend on how many experts the node holds, only on what moves.
    # The router's head is over the asked composition's experts whatever the probes hold.
    probe_n = min(cap.total_experts, max(n_experts, slots + 2 * max_batch))
    if probe_n != n_experts:
        setup = CoESetup(model, probe_n, max_batch, max_prompt, max_tokens, CachePolicy.LRU)
        coord = CoECoordinator(node, setup, reuse=reuse, book=LayerPrograms(ProgramBook()),
                               router_experts=n_experts)
    n_experts = probe_n
    coord.load()
    if coord.all_in_hbm:
        slots = max_batch  # the node cannot hold more than fits HBM: it never switches
    ids = iter(range(10**9))
    p0 = shapes[0][0]
    router = [0] * (max_batch + 1)
    switch = [-1] * (max_batch + 1)
    cursor = 0
    for b in range(1, max_batch + 1):
        cold: list[int] = []  # distinct experts not in HBM now: each one is a load
        for _ in range(n_experts):
            if len(cold) == min(b, slots) or coord.all_in_hbm:
                break
            if cursor not in coord.cache:
                cold.append(cursor)
            cursor = (cursor + 1) % n_experts
        experts = cold + [cold[0] if cold else 0] * (b - len(cold))
        res = coord.run_batch([Request(next(ids), e, p0, 1) for e in experts])
        router[b] = res.router_ns
        switch[res.misses] = res.switch_ns
    warm = coord.cache.resident()[0] if coord.cache.resident() else 0
    switch[0] = coord.run_batch([Request(next(ids), warm, p0, 1)]).switch_ns
    for k in range(1, max_batch + 1):  # only counts above the cache's slots go unprobed
        if switch[k] < 0:
            if k <= slots and not coord.all_in_hbm:
                raise ConfigError("switch probe", k, "a load count the probes reached")
            switch[k] = switch[k - 1]
    experts = [warm]
    exact = []
    for p, t in ([] if grid else shapes):
        res = coord.run_batch([Request(next(ids), experts[0], p, 1), Request(next(ids), experts[0], p, t)])
        one, whole = (r.end_ns - r.start_ns - r.load_ns for r in res.requests)
        exact.append((p, t, one, whole))
    prefill, decode = [], []
    for c in points:
        res = coord.run_batch([Request(next(ids), experts[0], c, 1), Request(next(ids), experts[0], c, 2)])
        one, two = (r.end_ns - r.start_ns - r.load_ns for r in res.requests)
        prefill.append(one)
        decode.append(two - one)
    return NodeCosts(node.profile.name,
                     max_batch, tuple(router), tuple(switch), tuple(exact), points, tuple(prefill),
                     tuple(decode),
                     coord.cache.capacity_bytes, coord.shard_bytes, asked_all_in_hbm,
                     coord.capacity.total_experts, coord.gpu, coord.capacity.hbm_experts, grid,
                     coord.switch_costs.program_load_ns, coord.switch_costs.argument_load_ns,
                     node.profile.runtime.tokenize_ns_per_token, node.profile.runtime.schedule_ns)


class CostServer:
    """One node serving batches from its measured costs, with its own HBM expert cache."""

    def __init__(self, costs: NodeCosts, policy: CachePolicy = CachePolicy.LRU,
                 future: Sequence[int] | None = None, held_experts: int | None = None) -> None:
        """``held_experts``: how many experts this node serves (a fleet node holds a share);
        a DGX keeps them all in HBM when they fit. None: as measured."""
        self.costs = costs
        self.cache = ExpertCache(costs.cache_bytes, policy, future)
        self._seq = 0
        self.all_in_hbm = costs.all_in_hbm if held_experts is None else (
            costs.gpu and held_experts <= costs.hbm_experts)
        self.switch_costs = SwitchCosts(costs.program_load_ns, costs.argument_load_ns)
        self._loaded: Loaded | None = None  # the program this node's sockets hold

    def serve(self, batch: list[Request]) -> BatchTiming:
        c = self.costs
        b = len(batch)
        if self.all_in_hbm:
            hits, loads = b, 0
        else:
            results = self.cache.access_batch([r.expert for r in batch], c.shard_bytes, self._seq)
            self._seq += b
            loads = sum(1 for r in results if not r.hit)
            hits = b - loads
            self.cache.unpin_all()
        admit = sum(r.prompt_len for r in batch) * c.tokenize_ns_per_token + c.schedule_ns
        t = admit + switch_time(self.switch_costs, self._loaded, ROUTER).total_ns + c.router_ns[b] + c.switch_ns[loads]
        self._loaded = ROUTER
        first, done = [], []
        for r in batch:
            pre, total = c.request_ns(r.prompt_len, r.output_tokens)
            into, to_decode, self._loaded = request_switches(self.switch_costs, self._loaded, r.expert,
                                                             r.output_tokens)
            first.append(t + into.total_ns + pre)
            t += into.total_ns + to_decode.total_ns + total
            done.append(t)
        return BatchTiming(t, tuple(done), hits, loads, tuple(first))

    def holds(self, expert: int) -> bool:
        return self.all_in_hbm or expert in self.cache


def probe_node(node: ManagedNode, model: ModelConfig, n_experts: int, max_batch: int,
               shape: tuple[int, int]) -> tuple[int, int, int]:
    """(router ns, switch ns, request ns) of one cold one-request batch on ``node``: a cheap
    check that a fleet node measures what the fully measured node did."""
    p, t = shape
    node.reset()
    setup = CoESetup(model, n_experts, max_batch, p, t, CachePolicy.LRU)
    coord = CoECoordinator(node, setup, reuse=CostReuse(node), book=LayerPrograms(ProgramBook()))
    coord.load()
    res = coord.run_batch([Request(0, 0, p, t)])
    r = res.requests[0]
    return res.router_ns, res.switch_ns, r.end_ns - r.start_ns - r.load_ns
