"""One socket's state and its program interpreter, with no Ray in it.

The :class:`SocketModel` composes the pure models (clock, memory tiers, DMA
engines, tile timing, trace) and runs a :class:`Program` op by op. Collectives
go through a :class:`~sn40l_emu.p2p.transport.Transport` handed in by the
caller, so the same interpreter runs in-process (tests, exact timing) and
inside a Ray actor (the distributed path).

Faults inside a program (injection): the socket can be set to die at a
virtual time (``fail_at_ns``), and a collective can lose a frame (a link went
down under it, or its sender died; see :mod:`sn40l_emu.fabric.link`). The op
running at that moment stops at that nanosecond, and the rest of the program
runs as a *ghost*: no time passes, memory bookkeeping still happens, and every
later collective is still taken part in, with all its frames marked lost at
the failure time. So the peers never wait for frames that will not come (no
hang, no wall-clock timeout), learn of the failure at the same nanosecond,
and every rank ends the program with a typed error (``SocketKilledError``,
``LinkLostError``, ``CollectiveAbortedError``) carrying its trace.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import CollectiveAbortedError, EmuError, LinkLostError, SocketKilledError, StepFault
from sn40l_emu.fabric.link import LOST_NS
from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import (
    AllocOp,
    CollectiveOp,
    CopyOp,
    DmaFenceOp,
    FreeOp,
    KernelOp,
    Program,
    Tier,
    WaitOp,
)
from sn40l_emu.socket_actor.clock import VirtualClock
from sn40l_emu.socket_actor.dma import DmaEngines, Engine
from sn40l_emu.socket_actor.memory import MemoryTiers
from sn40l_emu.socket_actor.pipeline import collective_hidden_ns, collective_idle_ns
from sn40l_emu.socket_actor.tile import Degradation, KernelCost, kernel_cost
from sn40l_emu.trace import TraceEvent, TraceRecorder

BREAKDOWN_KEYS = ("compute", "weights", "kv", "activations", "collectives", "launch", "copies", "other")


@dataclass
class ProgramResult:
    """What a socket reports after a program: its clock and where the time went."""

    socket: int
    label: str
    start_ns: int
    end_ns: int
    breakdown_ns: dict[str, int]  # sums to end_ns - start_ns
    kernel_ns: list[int] = field(default_factory=list)  # per KernelOp, program order (cost reuse)
    events: list[TraceEvent] = field(default_factory=list)
    link_free_ns: int = 0  # latest busy time of the links this socket sends on
    links_idle: bool = True  # links idle at start, at every collective's entry, and by the end
    hidden_ns: int = 0  # collective time hidden under fused kernels (not in breakdown_ns; pipeline.py)
    # links of this socket's view still busy after end_ns, as (link, free_ns): a node that keeps
    # no views of its own (Ray) learns the FIFO state from here (engine/reuse.py keys on it)
    busy_links: BusyLinks = ()

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def host_rate_per_socket(profile: NodeProfile) -> int:
    """Host-link bandwidth one socket gets when every socket copies at once.

    The SN40L has one host link per socket; the DGX baselines state one
    node-level host->GPU rate shared by all GPUs (docs/model.md §5).
    """
    return profile.host.link_bw_bytes_per_s * profile.host.links // profile.sockets


class SocketModel:
    """State and interpreter of one socket."""

    def __init__(self, index: int, profile: NodeProfile, *, trace: bool = True) -> None:
        self.index = index
        self.profile = profile
        self.clock = VirtualClock()
        s = profile.socket
        self.memory = MemoryTiers(s.sram_bytes, s.hbm_bytes, s.ddr_bytes)
        host_rate = host_rate_per_socket(profile)
        rates = {
            Engine.HBM_SRAM: profile.dma.hbm_sram_bw_bytes_per_s,
            Engine.DDR_HBM: profile.dma.ddr_hbm_bw_bytes_per_s,
            Engine.HOST_LINK: host_rate,
        }
        self.dma = DmaEngines(rates, profile.host.link_latency_ns)
        self._degradation = Degradation()
        self._pending_deg: list[Any] = []  # SetDegradation changes with a future from_ns, in time order
        self.fail_at_ns: int | None = None  # injected death (FailAt)
        self._failure: StepFault | None = None  # what stopped the running program
        self.trace = TraceRecorder(index, enabled=trace)
        # each P2P message's send and arrival in the trace; without them a traced collective may
        # take the batched in-process path (same nanoseconds, collectives/api.py)
        self.message_marks = True
        self.store: dict[str, np.ndarray] = {}
        self._coll_seq: dict[tuple[int, ...], int] = {}
        self._links_idle = True
        self._last_cost: KernelCost | None = None

    # ---- injected slow-downs ------------------------------------------------
    @property
    def degradation(self) -> Degradation:
        """Slow-downs in force at the socket's current clock (timed changes roll in)."""
        while self._pending_deg and self._pending_deg[0].from_ns <= self.clock.now_ns:
            self._degradation = self._pending_deg.pop(0).applied_to(self._degradation)
        return self._degradation

    @degradation.setter
    def degradation(self, value: Degradation) -> None:
        self._degradation = value
        self._pending_deg = []

    def schedule_degradation(self, change: Any) -> None:
        """Apply a ``SetDegradation`` now, or from its ``from_ns`` for kernels starting then or later."""
        if change.from_ns is None or change.from_ns <= self.clock.now_ns:
            self._degradation = change.applied_to(self.degradation)
            return
        self._pending_deg.append(change)
        self._pending_deg.sort(key=lambda c: c.from_ns)

    # ---- single operations -------------------------------------------------
    def kernel_cost(self, op: KernelOp) -> KernelCost:
        return kernel_cost(op, self.profile.socket, self.profile.tile, self.profile.launch,
                           host_rate_per_socket(self.profile), self.degradation)

    def run_kernel(self, op: KernelOp, bd: dict[str, int]) -> int:
        cost = self._last_cost = self.kernel_cost(op)
        t0 = self.clock.now_ns
        if self._dies_before(t0 + cost.total_ns):
            return self._cut(t0, "compute", op.name)
        self.clock.advance_by(cost.total_ns)
        self.trace.record(t0, cost.total_ns, "compute", op.name, bound=cost.bound,
                          compute_ns=cost.compute_ns, launch_ns=cost.launch_ns, **{
                              f"{k}_ns": v for k, v in cost.stream_ns.items()})
        for k, v in cost.attribution_ns.items():
            bd[k] += v
        if op.fn is not None:
            result = op.fn(*[self.tensor(n) for n in op.inputs], **dict(op.attrs))
            outs = result if isinstance(result, tuple) else (result,)
            if len(outs) != len(op.outputs):
                raise EmuError(f"kernel {op.name}: {len(outs)} results for outputs {op.outputs}")
            for name, value in zip(op.outputs, outs, strict=True):
                self.store[name] = value
        return cost.total_ns

    def run_copy(self, op: CopyOp, bd: dict[str, int]) -> int:
        t0 = self.clock.now_ns
        timing = self.dma.copy(op.src, op.dst, op.size_bytes, t0)
        if op.blocking and self._dies_before(timing.end_ns):
            return self._cut(t0, f"dma {op.src.value}->{op.dst.value}", op.name)
        if op.segment:
            self._move_segment(op)
        self.trace.record(timing.start_ns, timing.end_ns - timing.start_ns, f"dma {op.src.value}->{op.dst.value}",
                          op.name, size_bytes=op.size_bytes, queued_ns=timing.start_ns - t0)
        if op.blocking:
            self.clock.advance_to(timing.end_ns)
            bd["copies"] += self.clock.now_ns - t0
        return timing.end_ns

    def _move_segment(self, op: CopyOp) -> None:
        """Place the segment in the destination tier; read-only sources stay where they are."""
        if op.src is Tier.HOST:
            return  # the caller allocates the destination (host store is outside the socket)
        src = self.memory[op.src].get(op.segment)
        dst_tier = self.memory[op.dst] if op.dst is not Tier.HOST else None
        if dst_tier is not None and op.segment not in dst_tier:
            dst_tier.alloc(op.segment, src.size_bytes, read_only=src.read_only, payload=src.payload)
        if not src.read_only:
            self.memory[op.src].free(op.segment)

    def _dies_before(self, end_ns: int) -> bool:
        """Whether the injected death strikes before an op that would end at ``end_ns``."""
        return self.fail_at_ns is not None and self.fail_at_ns < end_ns

    def _cut(self, t0: int, track: str, name: str) -> int:
        """Stop the running op at the injected death; returns the time it ran."""
        assert self.fail_at_ns is not None
        self.clock.advance_to(self.fail_at_ns)
        self.trace.record(t0, self.clock.now_ns - t0, track, f"{name} (killed)", killed_at_ns=self.fail_at_ns)
        self._failure = self._failure or SocketKilledError(self.index, self.clock.now_ns)
        return self.clock.now_ns - t0

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.store[name]
        except KeyError:
            raise EmuError(f"socket {self.index}: tensor {name!r} is not in the store") from None

    # ---- programs ----------------------------------------------------------
    async def run_program(self, program: Program, transport: Transport | None = None) -> ProgramResult:
        """Run every op in order; collectives need a transport."""
        start = self.clock.now_ns
        bd = dict.fromkeys(BREAKDOWN_KEYS, 0)
        kernel_ns: list[int] = []
        self._links_idle = _links_busy_until(transport) <= start
        hidden_total = 0
        prev: object = None
        self._failure = None
        if self.fail_at_ns is not None and self.fail_at_ns <= start:
            self._failure = SocketKilledError(self.index, start)  # died between programs
        for op in program.ops:
            if self._failure is not None:
                await self._ghost(op, transport)
                continue
            if isinstance(op, KernelOp):
                kernel_ns.append(self.run_kernel(op, bd))
            elif isinstance(op, CopyOp):
                self.run_copy(op, bd)
            elif isinstance(op, CollectiveOp):
                if transport is None:
                    raise EmuError(f"socket {self.index}: collective {op.name} needs a transport")
                t0 = self.clock.now_ns
                hidden = collective_hidden_ns(prev, self._last_cost, op, self.profile,  # type: ignore[arg-type]
                                              transport.topology.n_sockets)
                await self.run_collective(op, transport, hidden_ns=hidden)
                bd["collectives"] += self.clock.now_ns - t0
                hidden_total += hidden
            elif isinstance(op, AllocOp):
                self.memory[op.tier].alloc(op.segment, op.size_bytes, read_only=op.read_only)
            elif isinstance(op, FreeOp):
                self.memory[op.tier].free(op.segment)
            elif isinstance(op, WaitOp):
                t0 = self.clock.now_ns
                if self._dies_before(op.until_ns):
                    self._cut(t0, "wait", op.name)
                else:
                    self.clock.advance_to(op.until_ns)
                bd["other"] += self.clock.now_ns - t0
            elif isinstance(op, DmaFenceOp):
                t0 = self.clock.now_ns
                if self._dies_before(self.dma.busy_until_ns()):
                    self._cut(t0, "dma fence", op.name)
                else:
                    self.clock.advance_to(self.dma.busy_until_ns())
                bd["copies"] += self.clock.now_ns - t0
            else:  # pragma: no cover - the Op union is closed
                raise EmuError(f"unknown op {op!r}")
            prev = op
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure.with_events(tuple(self.trace.drain()))
        link_free = _links_busy_until(transport)
        idle = self._links_idle and link_free <= self.clock.now_ns
        network = getattr(transport, "network", None)
        busy = network.busy_after(self.clock.now_ns) if network is not None and not idle else ()
        return ProgramResult(self.index, program.label, start, self.clock.now_ns, bd, kernel_ns,
                             self.trace.drain(), link_free, idle, hidden_total, busy)

    async def run_collective(self, op: CollectiveOp, transport: Transport, *, hidden_ns: int = 0) -> Tensor:
        """Run one collective; the result replaces ``store[op.buffer]`` in functional mode.

        ``hidden_ns`` > 0: the collective streamed out of the fused kernel before it
        (socket_actor/pipeline.py), so it started that much before the kernel's end.
        """
        from sn40l_emu.collectives.dispatch import run_collective
        from sn40l_emu.collectives.nccl import nccl_for, p2p_carrier

        if self.index not in op.group:
            raise EmuError(f"socket {self.index} is not in the group {op.group} of {op.name}")
        data: Tensor
        if op.buffer and op.buffer in self.store:
            data = self.store[op.buffer]
        else:
            data = SymbolicTensor(op.shape, op.dtype)
        seq = self._coll_seq.get(op.group, 0)
        self._coll_seq[op.group] = seq + 1
        tag = hash(op.group) & 0xFFFF_FFFF  # constant per group: sequence numbers keep order
        t0 = self.clock.now_ns
        if _links_busy_until(transport) > t0:
            self._links_idle = False
        start = t0 + self.profile.p2p.collective_fixed_ns - hidden_ns
        nccl = nccl_for(self.profile.nccl, op, self.profile.sockets)
        carrier = op
        if nccl is not None:
            start = t0
            carrier = p2p_carrier(op)
        if hasattr(transport, "trace"):  # framed transports mark each message for the trace
            transport.trace = self.trace if self.trace.enabled and self.message_marks else None
        network = getattr(transport, "network", None)
        if network is not None:
            network.take_losses()
        result, end_ns = await run_collective(transport, carrier, data, start, tag)
        fault = self._collective_fault(op, t0, end_ns, network.take_losses() if network is not None else [])
        if fault is not None:
            self._failure = fault
            self.clock.advance_to(fault.at_ns)
            self.trace.record(t0, self.clock.now_ns - t0, "p2p", f"{op.name} (failed)", kind=op.kind.value,
                              size_bytes=op.size_bytes, group=str(op.group), error=str(fault))
            return result
        if nccl is not None:
            # the P2P run carries the data and waits for the peers; NCCL's model times it
            idle = collective_idle_ns(carrier, self.profile, transport.topology.n_sockets)
            end_ns = max(t0, end_ns - (idle - self.profile.p2p.collective_fixed_ns)) + nccl.time_ns
            self.trace.record(end_ns - nccl.time_ns, nccl.time_ns, "nccl", op.name, algo=nccl.algo,
                              proto=nccl.proto.value, latency_ns=nccl.latency_ns,
                              algbw_bytes_per_s=nccl.algbw_bytes_per_s)
        self.clock.advance_to(end_ns)
        if hidden_ns:
            self.trace.record(t0 - hidden_ns, hidden_ns, "p2p.hidden", op.name, hidden_ns=hidden_ns)
        self.trace.record(t0, self.clock.now_ns - t0, "p2p", op.name, kind=op.kind.value,
                          size_bytes=op.size_bytes, group=str(op.group))
        target = op.out_buffer or op.buffer
        if target and isinstance(result, np.ndarray):
            self.store[target] = result
        return result

    def _collective_fault(self, op: CollectiveOp, t0: int, end_ns: int,
                          losses: list[tuple[tuple[int, int], int]]) -> StepFault | None:
        """The fault that stopped this collective, if any, stamped with when it stopped here.

        In order of precedence: this socket died during it; one of its own
        frames was lost (the earliest loss); a frame it waited for was lost.
        Never before the collective started on this socket.
        """
        if self.fail_at_ns is not None and self.fail_at_ns < end_ns:
            return SocketKilledError(self.index, max(t0, self.fail_at_ns))
        if losses:
            (a, b), at = min(losses, key=lambda x: x[1])
            return LinkLostError(a, b, max(t0, at), self.index)
        if end_ns >= LOST_NS:
            return CollectiveAbortedError(self.index, max(t0, end_ns - LOST_NS), op.name)
        return None

    async def _ghost(self, op: Any, transport: Transport | None) -> None:
        """Run ``op`` after this socket failed: no time passes, collectives send lost-marked frames."""
        assert self._failure is not None
        if isinstance(op, CollectiveOp) and transport is not None:
            from sn40l_emu.collectives.dispatch import run_collective

            data: Tensor = SymbolicTensor(op.shape, op.dtype)
            if op.buffer and op.buffer in self.store:
                data = self.store[op.buffer]
            seq = self._coll_seq.get(op.group, 0)
            self._coll_seq[op.group] = seq + 1
            if hasattr(transport, "trace"):  # as run_collective: a traced node takes the frame path on
                transport.trace = self.trace if self.trace.enabled and self.message_marks else None  # ghosts too
            at = self._failure.at_ns
            await run_collective(transport, op, data, LOST_NS + at, hash(op.group) & 0xFFFF_FFFF)
            network = getattr(transport, "network", None)
            if network is not None:
                network.take_losses()
        elif isinstance(op, AllocOp):
            self.memory[op.tier].alloc(op.segment, op.size_bytes, read_only=op.read_only)
        elif isinstance(op, FreeOp):
            self.memory[op.tier].free(op.segment)
        # kernels, copies, waits and fences: a failed socket spends no more time

    # ---- state -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"index": self.index, "clock_ns": self.clock.now_ns, "tiers": self.memory.usage(),
                "degradation": dataclasses.asdict(self.degradation)}


async def gather_outcomes(coros: list[Any]) -> list[ProgramResult | BaseException]:
    """Run one program per socket concurrently; per socket its result or its step fault.

    A fault inside the step (``SocketKilledError``, ``LinkLostError``,
    ``CollectiveAbortedError``) lets every other socket finish (they do, as
    ghosts never wait); any other error cancels the rest at once and is raised,
    so no socket waits for frames that a failed peer will never send.
    """
    import asyncio

    tasks = [asyncio.ensure_future(c) for c in coros]
    pending: set[asyncio.Future[Any]] = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        excs = [t.exception() for t in done]  # every one retrieved (no "never retrieved" noise)
        for exc in excs:
            if exc is not None and not isinstance(exc, (SocketKilledError, LinkLostError, CollectiveAbortedError)):
                for p in pending:
                    p.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise exc
    return [t.exception() or t.result() for t in tasks]


def settle(outcomes: list[ProgramResult | BaseException]) -> dict[int, ProgramResult]:
    """Results of one concurrent run, in program order, or its first error once all have ended.

    A node waits for every socket before raising, so no socket is left running
    a program into the next one. When a fault stopped the step, the error raised
    carries the traces of every socket it stopped, so the trace shows all of them.
    """
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if not errors:
        return {o.socket: o for o in outcomes if isinstance(o, ProgramResult)}
    faults = [e for e in errors if isinstance(e, (SocketKilledError, LinkLostError, CollectiveAbortedError))]
    if len(faults) < len(errors):
        raise next(e for e in errors if e not in faults)
    # the cause before its consequences: a kill, then a lost frame, then the aborted peers
    rank = {SocketKilledError: 0, LinkLostError: 1, CollectiveAbortedError: 2}
    first = min(faults, key=lambda e: (rank[type(e)], e.at_ns))
    raise first.with_events(tuple(ev for err in faults for ev in err.events))


def _links_busy_until(transport: Transport | None) -> int:
    """Latest time any link this socket sends on is busy (0 without a transport)."""
    network = getattr(transport, "network", None)
    if network is None:
        return 0
    return int(network.busy_until_ns())
