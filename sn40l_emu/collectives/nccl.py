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

Achieved bandwidth: every candidate's algbw is multiplied by
``nccl.bw_efficiency``, the measured busbw over this tuning-model busbw. The
tuning model is NCCL's own estimate for choosing, not a measurement: on A100
nccl-tests reaches ~200 GB/s where the model says 240, and on H100 the model's
ring (12 x 30 GB/s, a speed-array step below the 370.8 GB/s of the links) sits
a little under the measured 370. The knob is calibrated per profile against
nccl-tests (``validation/nccl-tests.yaml``); it scales bandwidth only, never
latency, and applies alike to every candidate, so NCCL's choice moves only
where latency and bandwidth trade (the crossover sizes).

Requested algorithm (``--algo``, :class:`~sn40l_emu.program.Algo`), as
``NCCL_ALGO`` restricts NCCL's tuner: ``auto`` = NCCL's own choice over every
candidate; ``ring`` = ring only (the protocol still chosen by time, as NCCL
does with ``NCCL_ALGO=RING``); ``nvls`` = NVLS only (all-reduce on a profile
with ``nccl.nvls_channels >= 2``). ``oneshot`` and ``tree`` are the P2P
model's algorithms: NCCL has no one-shot, and its tree (a chain inside one
node) is not modelled, so asking for them where NCCL times the collective is a
ConfigError rather than a number NCCL would never produce (``--set
nccl.enabled=0`` runs the P2P model on the GPU profile's links instead).

Tree and PAT are not among ``auto``'s candidates (on one NVSwitch node NCCL's
model prefers ring or NVLS for the sizes a TP step sends); broadcast and
groups spanning nodes use the P2P model. The constants live in the profile's
``nccl`` section, each with the line of NCCL it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from sn40l_emu.config import NcclSpec
from sn40l_emu.errors import ConfigError
from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp
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


#: The collectives NCCL's model times (the others run over the P2P model).
NCCL_KINDS = (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER, CollectiveKind.REDUCE_SCATTER)
#: ``--algo`` values where NCCL times the collective.
NCCL_ALGOS = (Algo.AUTO, Algo.RING, Algo.NVLS)


def has_nvls(spec: NcclSpec) -> bool:
    """Whether the profile has NVLS (NVLink SHARP): its busbw needs at least two channels."""
    return bool(spec.enabled) and spec.nvls_channels >= 2


def check_algo(spec: NcclSpec, kind: CollectiveKind, algo: Algo) -> None:
    """Raise ConfigError unless ``algo`` can run ``kind`` on a profile with this ``nccl`` section."""
    if algo is Algo.NVLS:
        if spec.nvls_channels < 2:
            raise ConfigError("nccl.nvls_channels", spec.nvls_channels,
                              ">= 2 for --algo nvls (a profile with NVLink SHARP, e.g. dgx-h100)")
        if not spec.enabled:
            raise ConfigError("nccl.enabled", spec.enabled, "1 for --algo nvls (NVLS is an NCCL algorithm)")
        if kind is not CollectiveKind.ALL_REDUCE:
            raise ConfigError("--algo", algo.value, f"auto or ring for {kind.value} "
                              "(NVLS is modelled for all-reduce only)")
    elif spec.enabled and kind in NCCL_KINDS and algo not in NCCL_ALGOS:
        raise ConfigError("--algo", algo.value, ", ".join(a.value for a in NCCL_ALGOS)
                          + " where NCCL times the collective (nccl.enabled=1; "
                          "--set nccl.enabled=0 for the P2P model's oneshot and tree)")


def _nsteps(kind: CollectiveKind, n: int) -> int:
    return 2 * (n - 1) if kind is CollectiveKind.ALL_REDUCE else n - 1


def candidates(spec: NcclSpec, kind: CollectiveKind, n: int,
               algo: Algo = Algo.AUTO) -> list[tuple[str, Proto, int, float]]:
    """(algo, proto, latency ns, algbw B/s) of every enabled choice for ``n`` ranks on one node
    (only ``algo``'s when it is ring or nvls); algbw includes ``bw_efficiency``."""
    if n < 2 or kind not in NCCL_KINDS:
        return []
    steps = _nsteps(kind, n)
    ratio = n / steps * spec.bw_efficiency
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
        if busbw > 0 and algo is not Algo.NVLS:
            out.append(("ring", proto, base + steps * hw, busbw * ratio))
    if kind is CollectiveKind.ALL_REDUCE and spec.nvls_channels >= 2 and algo is not Algo.RING:
        ch = spec.nvls_channels
        busbw = ch * spec.nvls_channel_bw_bytes_per_s * spec.nvls_efficiency * (ch - 1) / ch * 2
        if busbw > 0:
            out.append(("nvls", Proto.SIMPLE, spec.nvls_lat_ns, busbw * ratio))
    return out


def nccl_choice(spec: NcclSpec, kind: CollectiveKind, n: int, size_bytes: int,
                algo: Algo = Algo.AUTO) -> NcclChoice | None:
    """NCCL's pick for one call among ``algo``'s candidates (smallest predicted time; ties keep
    the earlier candidate), or None."""
    best: NcclChoice | None = None
    for name, proto, lat, algbw in candidates(spec, kind, n, algo):
        t = lat + -(-int(size_bytes) * NS_PER_S // int(algbw))
        if best is None or t < best.time_ns:
            best = NcclChoice(name, proto, lat, int(algbw), t)
    return best


def nccl_for(spec: NcclSpec, op: CollectiveOp, sockets_per_node: int) -> NcclChoice | None:
    """NCCL's pick for a program's collective when the NCCL model applies (enabled, one node),
    restricted to ``op.algo`` (raises ConfigError for an algorithm NCCL's model does not run)."""
    check_algo(spec, op.kind, op.algo)
    one_node = len({s // sockets_per_node for s in op.group}) == 1
    if op.algo is Algo.NVLS and not one_node:
        raise ConfigError("--algo", op.algo.value, "auto or ring for a group spanning nodes "
                          "(NVLS is modelled inside one NVSwitch node)")
    if not spec.enabled or not one_node:
        return None
    return nccl_choice(spec, op.kind, len(op.group), op.size_bytes, op.algo)


def p2p_carrier(op: CollectiveOp) -> CollectiveOp:
    """The P2P run that carries an NCCL-timed call's data (and meets its peers): the op itself,
    except that NVLS, which the P2P layer does not have, is carried by the selector's choice."""
    return replace(op, algo=Algo.AUTO) if op.algo is Algo.NVLS else op
