"""One socket's state and its program interpreter, with no Ray in it.

The :class:`SocketModel` composes the pure models (clock, memory tiers, DMA
engines, tile timing, trace) and runs a :class:`Program` op by op. Collectives
go through a :class:`~sn40l_emu.p2p.transport.Transport` handed in by the
caller, so the same interpreter runs in-process (tests, exact timing) and
inside a Ray actor (the distributed path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import EmuError
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
        self.degradation = Degradation()
        self.trace = TraceRecorder(index, enabled=trace)
        self.store: dict[str, np.ndarray] = {}
        self._coll_seq: dict[tuple[int, ...], int] = {}
        self._links_idle = True
        self._last_cost: KernelCost | None = None

    # ---- single operations -------------------------------------------------
    def kernel_cost(self, op: KernelOp) -> KernelCost:
        return kernel_cost(op, self.profile.socket, self.profile.tile, self.profile.launch,
                           host_rate_per_socket(self.profile), self.degradation)

    def run_kernel(self, op: KernelOp, bd: dict[str, int]) -> int:
        cost = self._last_cost = self.kernel_cost(op)
        t0 = self.clock.now_ns
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
        for op in program.ops:
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
                self.clock.advance_to(op.until_ns)
                bd["other"] += self.clock.now_ns - t0
            elif isinstance(op, DmaFenceOp):
                t0 = self.clock.now_ns
                self.clock.advance_to(self.dma.busy_until_ns())
                bd["copies"] += self.clock.now_ns - t0
            else:  # pragma: no cover - the Op union is closed
                raise EmuError(f"unknown op {op!r}")
            prev = op
        link_free = _links_busy_until(transport)
        idle = self._links_idle and link_free <= self.clock.now_ns
        return ProgramResult(self.index, program.label, start, self.clock.now_ns, bd, kernel_ns,
                             self.trace.drain(), link_free, idle, hidden_total)

    async def run_collective(self, op: CollectiveOp, transport: Transport, *, hidden_ns: int = 0) -> Tensor:
        """Run one collective; the result replaces ``store[op.buffer]`` in functional mode.

        ``hidden_ns`` > 0: the collective streamed out of the fused kernel before it
        (socket_actor/pipeline.py), so it started that much before the kernel's end.
        """
        from sn40l_emu.collectives.dispatch import run_collective
        from sn40l_emu.collectives.nccl import nccl_for

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
        if nccl is not None:
            start = t0
        if hasattr(transport, "trace"):  # framed transports mark each message for the trace
            transport.trace = self.trace if self.trace.enabled else None
        result, end_ns = await run_collective(transport, op, data, start, tag)
        if nccl is not None:
            # the P2P run carries the data and waits for the peers; NCCL's model times it
            idle = collective_idle_ns(op, self.profile, transport.topology.n_sockets)
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

    # ---- state -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"index": self.index, "clock_ns": self.clock.now_ns, "tiers": self.memory.usage(),
                "degradation": dataclasses.asdict(self.degradation)}


def _links_busy_until(transport: Transport | None) -> int:
    """Latest time any link this socket sends on is busy (0 without a transport)."""
    network = getattr(transport, "network", None)
    if network is None:
        return 0
    return int(network.busy_until_ns())
