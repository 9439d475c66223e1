"""GPU collectives as NCCL's own tuning model times them (intra-node, DGX baselines).

NCCL picks, per call, the (algorithm, protocol) with the smallest predicted
time (``ncclTopoGetAlgoTime`` in NVIDIA/nccl ``src/graph/tuning.cc``)::

    time_us = latency_us + size_bytes / (1000 * algbw_GBps)

For one node (``nNodes == 1``) and the ring algorithm, ``tuning.cc`` gives:

* bus bandwidth ``busBw = nChannels * bwIntra`` (the ring graph the topology
  search finds, ``src/graph/search.cc``: channels x per-channel GB/s filling the
  GPU's NVLinks at ``SMxx_NVLINK_BW`` per link, ``src/graph/topo.h``);
  LL: ``min(llMaxBw, busBw / 2)``; LL128: ``min(0.92 busBw, nChannels * perChMaxRingLL128Bw)``;
  Simple: ``busBw``;
* algorithm bandwidth ``algbw = busBw * nRanks / nsteps`` with ``nsteps`` =
  2(n-1) for all-reduce and n-1 for reduce-scatter / all-gather;
* latency ``baseLat[ring][proto] + nsteps * hwLat[NVLink][ring][proto]``.

NVLS (NVLink SHARP, H100 + NVSwitch; all-reduce, Simple only):
``busBw = nChannels * bwIntra * nvlsEfficiency * (nChannels-1)/nChannels * 2``
(all-reduce pipelines two operations), ``algbw = busBw * n / (2(n-1))``,
latency ``hwLat[NVLink][NVLS][Simple]`` (its base latency is 0).

Tree and PAT are not modelled (on one NVSwitch node NCCL's model prefers ring
or NVLS for the sizes a TP step sends); broadcast and groups spanning nodes use
the P2P model. The constants live in the profile's ``nccl`` section, each with
the line of NCCL it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sn40l_emu.config import NcclSpec
from sn40l_emu.program import CollectiveKind, CollectiveOp
from sn40l_emu.units import NS_PER_S


class Proto(str, Enum):
    LL = "LL"
    LL128 = "LL128"
    SIMPLE = "Simple"


@dataclass(frozen=True)
class NcclChoice:
    """What NCCL's tuner picks for one call, and its predicted time."""

    algo: str  # "ring" | "nvls"
    proto: Proto
    latency_ns: int
    algbw_bytes_per_s: int
    time_ns: int


def _nsteps(kind: CollectiveKind, n: int) -> int:
    return 2 * (n - 1) if kind is CollectiveKind.ALL_REDUCE else n - 1


def candidates(spec: NcclSpec, kind: CollectiveKind, n: int) -> list[tuple[str, Proto, int, float]]:
    """(algo, proto, latency ns, algbw B/s) of every enabled choice for ``n`` ranks on one node."""
    if n < 2 or kind not in (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER,
                             CollectiveKind.REDUCE_SCATTER):
        return []
    steps = _nsteps(kind, n)
    ratio = n / steps
    bus = spec.ring_channels * spec.ring_channel_bw_bytes_per_s
    out: list[tuple[str, Proto, int, float]] = []
    ring = {
        Proto.LL: (min(spec.ll_max_bw_bytes_per_s, bus * 0.5), spec.ring_base_lat_ll_ns, spec.ring_hw_lat_ll_ns),
        Proto.LL128: (min(bus * 0.92, spec.ring_channels * spec.ll128_channel_max_bw_bytes_per_s),
                      spec.ring_base_lat_ll128_ns, spec.ring_hw_lat_ll128_ns),
        Proto.SIMPLE: (float(bus), spec.ring_base_lat_simple_ns, spec.ring_hw_lat_simple_ns),
    }
    for proto, (busbw, base, hw) in ring.items():
        if proto is Proto.LL128 and not spec.ll128_enabled:
            continue
        if busbw > 0:
            out.append(("ring", proto, base + steps * hw, busbw * ratio))
    if kind is CollectiveKind.ALL_REDUCE and spec.nvls_channels >= 2:
        ch = spec.nvls_channels
        busbw = ch * spec.nvls_channel_bw_bytes_per_s * spec.nvls_efficiency * (ch - 1) / ch * 2
        if busbw > 0:
            out.append(("nvls", Proto.SIMPLE, spec.nvls_lat_ns, busbw * ratio))
    return out


def nccl_choice(spec: NcclSpec, kind: CollectiveKind, n: int, size_bytes: int) -> NcclChoice | None:
    """NCCL's pick for one call (smallest predicted time; ties keep the earlier candidate), or None."""
    best: NcclChoice | None = None
    for algo, proto, lat, algbw in candidates(spec, kind, n):
        t = lat + -(-int(size_bytes) * NS_PER_S // int(algbw))
        if best is None or t < best.time_ns:
            best = NcclChoice(algo, proto, lat, int(algbw), t)
    return best


def nccl_for(spec: NcclSpec, op: CollectiveOp, sockets_per_node: int) -> NcclChoice | None:
    """NCCL's pick for a program's collective when the NCCL model applies (enabled, one node)."""
    if not spec.enabled or len({s // sockets_per_node for s in op.group}) != 1:
        return None
    return nccl_choice(spec, op.kind, len(op.group), op.size_bytes)
