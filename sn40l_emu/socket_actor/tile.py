"""The tile timing model: what one kernel costs on one socket (docs/model.md §1).

A fused kernel is a coarse-grained pipeline: each operator is a stage, PCUs are
shared out among stages in proportion to their FLOPs, PMUs hold the stage
buffers. The kernel's body runs at the pace of its slowest stage or of the
memory streams that feed it, whichever is slower (dataflow: weight loads
overlap with compute); buffers that do not fit in SRAM spill through HBM.
Launch cost is added in front: a host round trip for software orchestration,
~0 for hardware orchestration, a CUDA launch on the GPU baselines.

Pure functions of the op and the socket's parameters: no clock, no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sn40l_emu.config import LaunchSpec, SocketSpec, TileSpec
from sn40l_emu.program import KernelOp, Launch, Stage, StreamKind, Tier
from sn40l_emu.units import compute_ns, scale_rate, transfer_ns


@dataclass(frozen=True)
class Degradation:
    """Injected slow-downs of one socket (1.0 = healthy; 0.5 = half speed)."""

    compute_factor: float = 1.0
    hbm_factor: float = 1.0
    ddr_factor: float = 1.0
    host_factor: float = 1.0


@dataclass(frozen=True)
class KernelCost:
    """A kernel's time with its named terms. ``body_ns`` is max(compute, streams)."""

    total_ns: int
    launch_ns: int
    body_ns: int
    compute_ns: int
    stream_ns: dict[str, int]  # per tier value ("hbm", "ddr", "host")
    bound: str  # "compute" | "hbm" | "ddr" | "host" | "launch" | "empty"
    spill_bytes: int
    stage_pcus: tuple[int, ...]
    attribution_ns: dict[str, int] = field(default_factory=dict)  # sums to total_ns


def share_units(weights: list[int], units: int) -> list[int]:
    """Split ``units`` among stages in proportion to ``weights`` (largest remainder).

    Every stage with nonzero weight gets at least one unit (a stage needs a PCU
    to run at all); ties go to the earlier stage, so the split is deterministic.
    """
    n = len(weights)
    total = sum(weights)
    if n == 0 or total == 0:
        return [0] * n
    active = [i for i, w in enumerate(weights) if w > 0]
    units = max(units, len(active))
    exact = [w * units / total for w in weights]
    out = [int(x) for x in exact]
    rest = units - sum(out)
    for i in sorted(active, key=lambda i: (-(exact[i] - out[i]), i))[:rest]:
        out[i] += 1
    for i in active:  # a stage needs at least one unit: take it from the largest share
        if out[i] == 0:
            j = max(active, key=lambda k: (out[k], -k))
            out[j] -= 1
            out[i] = 1
    return out


def stage_compute_ns(stages: tuple[Stage, ...], pcus: int, peak_flops_per_s: int,
                     compute_units: int, efficiency: float) -> tuple[int, tuple[int, ...]]:
    """Slowest stage time when ``pcus`` PCUs are shared among the stages."""
    alloc = share_units([s.flops for s in stages], pcus)
    per_pcu = scale_rate(peak_flops_per_s, efficiency / compute_units)
    worst = 0
    for stage, p in zip(stages, alloc, strict=True):
        if stage.flops:
            worst = max(worst, compute_ns(stage.flops, per_pcu * p))
    return worst, tuple(alloc)


def launch_ns(launch: Launch, spec: LaunchSpec) -> int:
    """Launch cost of one kernel; with CUDA graphs a GPU kernel is a graph node replayed on the device."""
    gpu = spec.gpu_graph_kernel_ns if spec.cuda_graphs else spec.gpu_kernel_ns
    return {
        Launch.SO: spec.so_call_ns,
        Launch.HO: spec.ho_kernel_ns,
        Launch.GPU: gpu,
        Launch.NONE: 0,
    }[launch]


def _split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Integer split of ``total`` in proportion to ``weights`` (largest remainder; exact sum)."""
    tw = sum(weights.values())
    if tw == 0 or total == 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / tw for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    rest = total - sum(out.values())
    for k in sorted(weights, key=lambda k: (-(exact[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def kernel_cost(op: KernelOp, socket: SocketSpec, tile: TileSpec, launch: LaunchSpec,
                host_bw_bytes_per_s: int, deg: Degradation = Degradation()) -> KernelCost:
    """Cost of one kernel call on one socket; see the module docstring for the model."""
    pcus = max(1, int(socket.compute_units * tile.pcu_occupancy))
    comp_ns, alloc = stage_compute_ns(op.stages, pcus, socket.peak_flops_per_s,
                                      socket.compute_units, tile.compute_efficiency * deg.compute_factor)

    sram_avail = int(socket.sram_bytes * tile.pmu_occupancy)
    spill = max(0, op.sram_bytes - sram_avail)
    tier_bytes: dict[Tier, int] = {}
    kind_bytes: dict[Tier, dict[str, int]] = {}
    for s in op.streams:
        if s.tier is Tier.SRAM:
            continue  # on-chip traffic is part of the stage pipeline
        tier_bytes[s.tier] = tier_bytes.get(s.tier, 0) + s.size_bytes
        kb = kind_bytes.setdefault(s.tier, {})
        kb[s.kind.value] = kb.get(s.kind.value, 0) + s.size_bytes
    if spill:
        # a buffer that does not fit is written out and read back once through HBM
        tier_bytes[Tier.HBM] = tier_bytes.get(Tier.HBM, 0) + 2 * spill
        kb = kind_bytes.setdefault(Tier.HBM, {})
        kb[StreamKind.ACTIVATIONS.value] = kb.get(StreamKind.ACTIVATIONS.value, 0) + 2 * spill

    rates = {
        Tier.HBM: scale_rate(socket.hbm_bw_bytes_per_s, tile.hbm_stream_efficiency * deg.hbm_factor),
        Tier.DDR: scale_rate(max(socket.ddr_bw_bytes_per_s, 1), tile.ddr_stream_efficiency * deg.ddr_factor),
        Tier.HOST: scale_rate(host_bw_bytes_per_s, deg.host_factor),
    }
    stream_ns = {t.value: transfer_ns(b, rates[t]) for t, b in tier_bytes.items()}
    terms = {"compute": comp_ns, **stream_ns}
    body = max(terms.values(), default=0)
    bound = "empty" if body == 0 else max(terms, key=lambda k: (terms[k], k == "compute"))
    lnch = launch_ns(op.launch, launch)
    total = lnch + body
    if (body > 0 and lnch > body) or (body == 0 and lnch > 0):
        bound = "launch"

    # critical-path attribution: the body goes to what bounds it; a memory-bound
    # body is split over the kinds of bytes streamed on the bounding tier
    attribution = {"compute": 0, "weights": 0, "kv": 0, "activations": 0, "launch": lnch}
    if body:
        bounding = max(terms, key=lambda k: (terms[k], k == "compute"))
        if bounding == "compute":
            attribution["compute"] = body
        else:
            for k, v in _split(body, kind_bytes[Tier(bounding)]).items():
                attribution[k] += v
    return KernelCost(total, lnch, body, comp_ns, stream_ns, bound, spill, alloc, attribution)
