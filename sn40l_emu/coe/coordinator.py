"""The Composition-of-Experts coordinator: route, swap, run, explain (docs/model.md §4-5).

One batch of B prompts:
  1. the router runs once as its own program (coe/router.py: a batch-B prefill,
     TP over every socket, ending in the expert-choice head). In functional
     mode its argmax picks each prompt's expert; in timing mode the workload's
     expert stands (no real prompts to read);
  2. the experts the batch picked are looked up in the HBM expert cache;
     misses are copied in on every socket at once (SN40L: DDR->HBM on each
     socket's DMA engine; DGX: host->HBM over the shared host link), evicting
     by the cache policy — weights are read-only, so eviction copies nothing;
  3. each (prompt, expert) pair runs in turn: prefill, then decode steps until
     it has its output tokens (the prefill yields the first one).
Whenever the sockets switch program (into the router, router -> expert
prefill, prefill -> decode, decode -> the next prefill) the host runtime pays
Program Load + Argument Load, and Argument Load alone when only the weights
change (coe/program_switch.py has the rule).

The rest of the host runtime (workload/host_runtime.py, as ``tp-scaling`` pays
it) runs around the device too: admitting the batch (tokenizing every prompt,
one scheduling pass) before the router, and after every device step of an
expert (its prefill and each decode step) the serving loop's step overhead and
the output token's host terms (logits or ids over the host link, sampling, the
next token back, the per-sequence overhead). Each (prompt, expert) pair runs
as a batch-1 generation, so each pays those per output token.

``total_ns = router_ns + switch_ns + program_load_ns + argument_load_ns +
host_ns + expert_ns`` for the batch: router and expert time on the sockets, the
expert copies, the host's loads and the rest of the host runtime. Every phase is
measured on the sockets' clocks (the slowest socket ends a phase); each host
term delays every socket alike.

Where experts live: on SN40L all experts live in DDR and HBM is a cache that
starts cold (holding only the router and the KV reservation). On a DGX they
live in GPU HBM while they all fit there (no switching at all), otherwise in
host DRAM with HBM as a cold cache. A composition that does not fit raises
``OutOfMemory`` naming the tier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sn40l_emu.cluster.node import Node, TensorNode
from sn40l_emu.coe.cache import CachePolicy, ExpertCache
from sn40l_emu.coe.capacity import expert_region_bytes, expert_shard_bytes, experts_per_node
from sn40l_emu.coe.program_switch import (
    ROUTER,
    ROUTER_WEIGHTS,
    Loaded,
    SwitchCosts,
    expert_decode,
    expert_prefill,
    load_split,
    switch_time,
)
from sn40l_emu.coe.router import RouterPrograms, choose_experts
from sn40l_emu.coe.weight_store import WeightStore
from sn40l_emu.coe.workload import Request, prompt_token_ids
from sn40l_emu.config import Platform
from sn40l_emu.engine.functional_tp import TPGenerator
from sn40l_emu.engine.program_book import GroupPrograms, ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.errors import FAULT_ERRORS, ConfigError, EmuError, OutOfMemory
from sn40l_emu.program import AllocOp, CopyOp, DmaFenceOp, FreeOp, Program, Tier
from sn40l_emu.socket_actor.socket_model import ProgramResult
from sn40l_emu.trace import TraceEvent
from sn40l_emu.units import ceil_div
from sn40l_emu.workload import ExecMode, ModelConfig, Step, make_plan
from sn40l_emu.workload.host_runtime import HostTime, decode_step_ns, request_ns
from sn40l_emu.workload.router_head import HEAD_OUTPUT


@dataclass(frozen=True)
class CoESetup:
    """One composition on one node."""

    model: ModelConfig  # every expert's shape (and the router's)
    n_experts: int
    batch: int
    prompt_len: int
    output_tokens: int
    policy: CachePolicy = CachePolicy.LRU
    mode: ExecMode | None = None  # default: FUSED_HO on SN40L, GPU on a DGX
    seed: int = 0  # the workload's seed: synthetic prompts' token ids (functional mode)


@dataclass
class RequestResult:
    request: int
    expert: int
    start_ns: int
    end_ns: int
    hit: bool
    tokens: list[int] | None = None  # functional mode: the greedy output tokens
    load_ns: int = 0  # Program/Argument Load inside [start_ns, end_ns] (the rest: sockets and host runtime)


@dataclass
class BatchResult:
    """One batch's time, every nanosecond in exactly one of the six phases of ``total_ns``."""

    router_ns: int  # the router program on the sockets
    switch_ns: int  # expert copies into HBM
    expert_ns: int  # the (prompt, expert) pairs' programs on the sockets
    hits: int
    misses: int
    requests: list[RequestResult]
    events: list[TraceEvent] = field(default_factory=list)
    program_load_ns: int = 0  # host: Program Load at every program switch
    argument_load_ns: int = 0  # host: Argument Load at every switch of program or weights
    start_ns: int = 0  # when the batch began (the latest socket clock)
    host_ns: int = 0  # host runtime: admitting the batch, then step overhead and token terms per device step
    admit_ns: int = 0  # the part of host_ns spent admitting the batch (tokenize, schedule)

    @property
    def total_ns(self) -> int:
        return (self.router_ns + self.switch_ns + self.program_load_ns + self.argument_load_ns + self.host_ns
                + self.expert_ns)


class BatchInterrupted(EmuError):
    """A fault stopped a batch: ``done`` completed before it, the rest of the batch did not.

    The driver recovers the node and runs the rest again (:meth:`CoECoordinator.resume_after_fault`).
    """

    def __init__(self, cause: EmuError, done: list[RequestResult], events: list[TraceEvent]) -> None:
        self.cause = cause
        self.done = done
        self.events = events
        super().__init__(f"batch stopped after {len(done)} request(s): {cause}")


def default_mode(platform: Platform) -> ExecMode:
    return ExecMode.GPU if platform is Platform.GPU else ExecMode.FUSED_HO


class CoECoordinator:
    """Drives one node through CoE batches; the node's sockets do all the timing."""

    def __init__(self, node: Node, setup: CoESetup, *, reuse: CostReuse | None = None,
                 book: GroupPrograms | None = None, future: Sequence[int] | None = None,
                 store: WeightStore | None = None, router_experts: int | None = None) -> None:
        """``router_experts``: how many experts the router's head chooses among (default: the
        composition's); cost probes run a larger composition but time the asked one's router."""
        self.node = node
        self.setup = setup
        self.profile = node.profile
        self.reuse = reuse or CostReuse(node)
        self.book: GroupPrograms = book or ProgramBook()
        self.sockets = tuple(range(node.n_sockets))
        self.plan = make_plan(setup.model, len(self.sockets), self.sockets)
        self.mode = setup.mode or default_mode(self.profile.platform)
        self.expert_bytes = setup.model.weight_bytes
        self.shard_bytes = expert_shard_bytes(self.profile, self.expert_bytes)
        max_ctx = setup.prompt_len + setup.output_tokens
        self.kv_bytes = setup.batch * max_ctx * setup.model.kv_bytes_per_token
        self.capacity = experts_per_node(self.profile, self.expert_bytes, self.expert_bytes, self.kv_bytes)
        region = expert_region_bytes(self.profile, self.expert_bytes, self.kv_bytes)
        self.gpu = self.profile.platform is Platform.GPU
        self.all_in_hbm = self.gpu and setup.n_experts <= self.capacity.hbm_experts
        self._future = list(future) if future is not None else None
        self.cache = ExpertCache(region, setup.policy, self._future)
        self._seq = 0
        self.load_ns = 0
        self.store = store  # functional mode: real expert weights from the host weight store
        self._active: int | None = None  # functional: whose weights the sockets' stores hold
        self.router = RouterPrograms(setup.model, self.plan, self.mode, router_experts or setup.n_experts,
                                     self.book)
        self.switch_costs = SwitchCosts.of(self.profile)
        self._loaded: Loaded | None = None  # the program the sockets hold (program_switch.py)
        self._loads = [0, 0]  # this batch's (Program Load, Argument Load) ns so far
        self._host_ns = 0  # this batch's other host-runtime ns so far
        self._step_host = decode_step_ns(self.profile, setup.model.vocab_size, 1)  # after each device step

    # ---- composition ------------------------------------------------------
    def load(self) -> int:
        """Place router, KV reservation and every expert; time the host-link load. Raises OutOfMemory."""
        n = self.setup.n_experts
        if n > self.capacity.total_experts:
            tier = self.capacity.limiting_tier.value
            raise OutOfMemory(tier, n * self.shard_bytes if tier != "host" else n * self.expert_bytes,
                              self.capacity.total_experts * (self.shard_bytes if tier != "host" else self.expert_bytes),
                              f"{n} experts (the node holds {self.capacity.total_experts})")
        res = self._run({s: Program.of("load composition", self._placement_ops()) for s in self.sockets})
        self.load_ns = _span(res)
        return self.load_ns

    def _placement_ops(self) -> list[AllocOp | CopyOp | DmaFenceOp]:
        """Place router, KV reservation and experts on one socket, copied from the host."""
        n = self.setup.n_experts
        router_shard = ceil_div(self.expert_bytes, len(self.sockets))
        kv_shard = ceil_div(self.kv_bytes, len(self.sockets))
        ops: list[AllocOp | CopyOp | DmaFenceOp] = [
            AllocOp("router", Tier.HBM, router_shard, read_only=True),
            AllocOp("kv", Tier.HBM, kv_shard),
            CopyOp("load router", Tier.HOST, Tier.HBM, router_shard, blocking=False),
        ]
        if self.all_in_hbm:
            ops += [AllocOp(f"expert{e}", Tier.HBM, self.shard_bytes, read_only=True) for e in range(n)]
            ops.append(CopyOp("load experts", Tier.HOST, Tier.HBM, n * self.shard_bytes, blocking=False))
        elif not self.gpu:
            ops += [AllocOp(f"expert{e}", Tier.DDR, self.shard_bytes, read_only=True) for e in range(n)]
            ops.append(CopyOp("load experts", Tier.HOST, Tier.DDR, n * self.shard_bytes, blocking=False))
        # a DGX beyond HBM keeps experts in host DRAM: already there, nothing to move
        ops.append(DmaFenceOp("composition loaded"))
        return ops

    def reload_after_failure(self, recovered: Sequence[int], t_fail_ns: int = 0) -> int:
        """Recovery after sockets came back empty: reload their state, restart the cache cold.

        The recovered sockets get their router shard, KV reservation and every
        expert shard again from the host weight store over their host link;
        survivors drop their HBM expert copies (the cache must hold the same
        experts on every socket of the TP group). The group then waits for the
        slowest socket. Returns the recovery time in ns (failure to resumed);
        ``t_fail_ns`` is the latest clock seen before the failure.
        """
        t_fail = max(max(self.node.clocks()), t_fail_ns)
        self.node.advance_clocks(dict.fromkeys(self.sockets, t_fail))
        resident = self.cache.resident()
        progs: dict[int, Program] = {}
        for s in self.sockets:
            if s in recovered:
                progs[s] = Program.of("reload after failure", self._placement_ops())
            elif resident and not self.all_in_hbm:
                progs[s] = Program.of("drop HBM experts", [FreeOp(f"expert{e}@hbm", Tier.HBM) for e in resident])
        if progs:
            self.reuse.run(progs)
        if not self.all_in_hbm:
            self.cache = ExpertCache(self.cache.capacity_bytes, self.setup.policy, self._future)
            self._seq = 0 if self._future is None else self._seq
        self._active = None
        self._loaded = None  # recovered sockets hold no program: the next one is loaded whole
        t_back = max(self.node.clocks())
        self.node.advance_clocks(dict.fromkeys(self.sockets, t_back))
        return t_back - t_fail

    def resume_after_fault(self) -> int:
        """After a fault stopped a step and every socket is alive: release the batch's pins,
        and line the sockets up at the latest clock (the node's), where the group restarts
        together. Returns that time. The HBM cache keeps what it holds: the memory
        effects of the stopped step happened on every socket (a failed socket still does
        its allocations, see :mod:`sn40l_emu.socket_actor.socket_model`)."""
        if not self.all_in_hbm:
            self.cache.unpin_all()
        t = max(self.node.clocks())
        self.node.advance_clocks(dict.fromkeys(self.sockets, t))
        return t

    # ---- one batch --------------------------------------------------------
    def run_batch(self, requests: Sequence[Request]) -> BatchResult:
        """Route, switch and run one batch; a fault inside it raises :class:`BatchInterrupted`."""
        events: list[TraceEvent] = []
        done: list[RequestResult] = []
        try:
            return self._run_batch(requests, events, done)
        except FAULT_ERRORS as exc:
            raise BatchInterrupted(exc, done, events) from exc

    def _run_batch(self, requests: Sequence[Request], events: list[TraceEvent],
                   done: list[RequestResult]) -> BatchResult:
        t0 = self._now()
        self._loads = [0, 0]
        self._host_ns = 0
        b = len(requests)
        self._host(request_ns(self.profile, sum(r.prompt_len for r in requests), 1), "admit", events)
        admit = self._host_ns
        self._switch(ROUTER, events)
        experts = self._route(requests, events)
        t1 = self._now()
        router_load = sum(self._loads)
        events.append(TraceEvent(t0, t1 - t0, -1, "coe", f"router (batch {b})", {"experts": str(experts)}))

        if self.all_in_hbm:
            hits, misses, loads, evicted = b, 0, [], []
            hit_flags = [True] * b
        else:
            results = self.cache.access_batch(experts, self.shard_bytes, self._seq)
            self._seq += b
            hit_flags = [r.hit for r in results]
            hits = sum(hit_flags)
            misses = b - hits
            loads = [r.expert_id for r in results if not r.hit]
            evicted = [e for r in results for e in r.evicted]
        if loads:
            src = Tier.HOST if self.gpu else Tier.DDR
            ops: list[AllocOp | FreeOp | CopyOp | DmaFenceOp] = [FreeOp(f"expert{e}@hbm", Tier.HBM) for e in evicted]
            for e in loads:
                ops.append(AllocOp(f"expert{e}@hbm", Tier.HBM, self.shard_bytes, read_only=True))
                ops.append(CopyOp(f"switch in expert {e}", src, Tier.HBM, self.shard_bytes, blocking=False))
            ops.append(DmaFenceOp("experts in"))
            res = self._run({s: Program.of("switch", ops) for s in self.sockets})
            events += _events(res)
        t2 = self._now()
        events.append(TraceEvent(t1, t2 - t1, -1, "coe", f"switch ({len(loads)} experts)",
                                 {"loaded": str(loads), "evicted": str(evicted)}))

        for r, expert, hit in zip(requests, experts, hit_flags, strict=True):
            rs = self._now()
            before = sum(self._loads)
            tokens = None
            if self.store is not None:
                tokens = self._run_functional(r, expert, events)
            else:
                self._run_request(r, expert, events)
            re_ = self._now()
            events.append(TraceEvent(rs, re_ - rs, -1, "coe", f"expert {expert} (request {r.id})",
                                     {"tokens": r.output_tokens}))
            done.append(RequestResult(r.id, expert, rs, re_, hit, tokens, sum(self._loads) - before))
        t3 = self._now()
        if not self.all_in_hbm:
            self.cache.unpin(experts)
        program_load, argument_load = self._loads
        expert_load = program_load + argument_load - router_load
        expert_host = self._host_ns - admit
        return BatchResult(t1 - t0 - router_load - admit, t2 - t1, t3 - t2 - expert_load - expert_host, hits,
                           misses, done, events, program_load, argument_load, t0, self._host_ns, admit)

    def _route(self, requests: Sequence[Request], events: list[TraceEvent]) -> list[int]:
        """Run the router program; functional mode returns its choices, timing mode the workload's."""
        b = len(requests)
        if self.store is None:
            res = self._run(self.router.group(b, self.setup.prompt_len))
            events += _events(res)
            return [r.expert for r in requests]
        node = self._tensor_node()
        lengths = {r.prompt_len for r in requests}
        if len(lengths) != 1:
            raise ConfigError("prompt_len", sorted(lengths),
                              "one prompt length per batch in functional mode (the router runs them as one prefill)")
        if self._active != ROUTER_WEIGHTS:
            assert self.store is not None
            node.load_tensors({s: self.store.read_router_shard(s) for s in self.sockets})
            self._active = ROUTER_WEIGHTS
        vocab = self.setup.model.vocab_size
        tokens = np.concatenate([prompt_token_ids(r, vocab, self.setup.seed) for r in requests], axis=0)
        positions = np.arange(tokens.shape[1], dtype=np.int64)
        node.load_tensors({s: {"tokens": tokens, "positions": positions} for s in self.sockets})
        res = self._run(self.router.group(b, tokens.shape[1], functional=True))
        events += _events(res)
        logits = node.get_tensors(self.plan.group[0], [HEAD_OUTPUT])[HEAD_OUTPUT]
        return choose_experts(logits)

    def _tensor_node(self) -> TensorNode:
        if not isinstance(self.node, TensorNode):
            raise EmuError(f"{type(self.node).__name__} holds no tensors: functional mode needs them")
        return self.node

    def _switch(self, nxt: Loaded, events: list[TraceEvent]) -> None:
        """Switch every socket to ``nxt``: the host's loads delay each socket by their closed form."""
        cost = switch_time(self.switch_costs, self._loaded, nxt)
        self._loaded = nxt
        program_load, argument_load = load_split(cost)
        self._loads[0] += program_load
        self._loads[1] += argument_load
        what = nxt.program if nxt.weights == ROUTER_WEIGHTS else f"{nxt.program}, expert {nxt.weights}"
        self._delay(cost, what, events)

    def _host(self, cost: HostTime, what: str, events: list[TraceEvent]) -> None:
        """Host runtime between device steps: it delays every socket by its closed form."""
        self._host_ns += cost.total_ns
        self._delay(cost, what, events)

    def _delay(self, cost: HostTime, what: str, events: list[TraceEvent]) -> None:
        """The host works while every socket waits: each clock moves by ``cost``, one slice per
        term on the ``host`` track (a delay common to all sockets adds exactly: engine/reuse.py)."""
        if not cost.total_ns:
            return
        clocks = self.node.clocks()
        t = max(clocks[s] for s in self.sockets)
        self.node.advance_clocks({s: clocks[s] + cost.total_ns for s in self.sockets})
        for name, ns in cost.terms:
            if ns:
                events.append(TraceEvent(t, ns, -1, "host", f"{name} ({what})", {}))
            t += ns

    def _run_functional(self, r: Request, expert: int, events: list[TraceEvent]) -> list[int]:
        """Real tensors: the expert's shards come from the host weight store, tokens are greedy."""
        assert self.store is not None
        node = self._tensor_node()
        gen = TPGenerator(node, self.setup.model, self.plan, self.mode)  # type: ignore[arg-type]
        if self._active != expert:
            gen.load_shards({s: self.store.read_shard(expert, s) for s in self.sockets})
            self._active = expert
        self._switch(expert_prefill(expert), events)
        out = [int(np.argmax(gen.prefill(prompt_token_ids(r, self.setup.model.vocab_size, self.setup.seed)),
                             axis=-1)[0])]
        self._host(self._step_host, f"request {r.id}", events)
        if r.output_tokens > 1:
            self._switch(expert_decode(expert), events)
        while len(out) < r.output_tokens:
            out.append(int(np.argmax(gen.decode(np.array([[out[-1]]], dtype=np.int64)), axis=-1)[0]))
            self._host(self._step_host, f"request {r.id}", events)
        return out

    def _run_request(self, r: Request, expert: int, events: list[TraceEvent]) -> None:
        model, plan, mode = self.setup.model, self.plan, self.mode
        self._switch(expert_prefill(expert), events)
        res = self._run(self.book.group(model, plan, Step.prefill(1, r.prompt_len), mode))
        events += _events(res)
        self._host(self._step_host, f"request {r.id}", events)
        if r.output_tokens > 1:
            self._switch(expert_decode(expert), events)
        for i in range(1, r.output_tokens):
            res = self._run(self.book.group(model, plan, Step.decode(1, r.prompt_len + i - 1), mode))
            events += _events(res)  # a reused step is one event per socket; the trace expands it
            self._host(self._step_host, f"request {r.id}", events)

    # ---- helpers ----------------------------------------------------------
    def _run(self, programs: dict[int, Program]) -> dict[int, ProgramResult]:
        return self.reuse.run(programs)

    def _now(self) -> int:
        clocks = self.node.clocks()
        return max(clocks[s] for s in self.sockets)


def _span(results: dict[int, ProgramResult]) -> int:
    return max(r.end_ns for r in results.values()) - min(r.start_ns for r in results.values())


def _events(results: dict[int, ProgramResult]) -> list[TraceEvent]:
    return [e for r in results.values() for e in r.events]
