"""Node profiles: shipped YAML in, frozen dataclasses in base units out, clear errors.

A profile is loaded once (by name from ``sn40l_emu/profiles`` or from a path),
optionally ``extends`` another profile, and may be overridden field by field
(``--set p2p.link_bw_gbps=25``). Every leaf of a shipped profile is written as
``{value, source, knob}`` so the source of each number sits beside it; the
resolved sources travel with the profile and are written next to results.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from sn40l_emu import yaml_load
from sn40l_emu.errors import ConfigError
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.schema import Unit, base_value_text, build_section, field_specs, q, split_leaf


class Platform(str, Enum):
    """What kind of machine a profile describes; decides how workloads are lowered."""

    SN40L = "sn40l"
    GPU = "gpu"


@dataclass(frozen=True)
class SocketSpec:
    """One socket (an RDU, or a GPU on the baselines)."""

    peak_flops_per_s: int = q("peak_tflops", Unit.TFLOPS)
    compute_units: int = q("pcus", Unit.COUNT)
    memory_units: int = q("pmus", Unit.COUNT)
    sram_bytes: int = q("sram_mib", Unit.MIB)
    hbm_bytes: int = q("hbm_gib", Unit.GIB)
    hbm_bw_bytes_per_s: int = q("hbm_bw_tbps", Unit.TBPS)
    ddr_bytes: int = q("ddr_tib", Unit.TIB, allow_zero=True)
    ddr_bw_bytes_per_s: int = q("ddr_bw_gbps", Unit.GBPS, allow_zero=True)
    dies: int = q("dies", Unit.COUNT)


@dataclass(frozen=True)
class DmaSpec:
    """DMA engine rates per socket and tier pair (each engine a FIFO server)."""

    ddr_hbm_bw_bytes_per_s: int = q("ddr_hbm_gbps", Unit.GBPS, allow_zero=True)
    hbm_sram_bw_bytes_per_s: int = q("hbm_sram_gbps", Unit.GBPS)


@dataclass(frozen=True)
class HostSpec:
    """The x86 host: its DRAM and its links to the sockets."""

    dram_bytes: int = q("dram_tib", Unit.TIB)
    link_bw_bytes_per_s: int = q("link_gbps", Unit.GBPS)
    links: int = q("links", Unit.COUNT)
    link_latency_ns: int = q("link_latency_us", Unit.US, allow_zero=True)


@dataclass(frozen=True)
class TileSpec:
    """Achieved efficiencies of the tile (model parameters, never fitted outputs)."""

    pcu_occupancy: float = q("pcu_occupancy", Unit.FRACTION)
    pmu_occupancy: float = q("pmu_occupancy", Unit.FRACTION)
    hbm_stream_efficiency: float = q("hbm_stream_efficiency", Unit.FRACTION)
    ddr_stream_efficiency: float = q("ddr_stream_efficiency", Unit.FRACTION)
    compute_efficiency: float = q("compute_efficiency", Unit.FRACTION)
    # tiles a fused kernel streams its all-reduce in (1 = kernel then collective), socket_actor/pipeline.py
    collective_tiles: int = q("collective_tiles", Unit.COUNT, max_value=65536)


@dataclass(frozen=True)
class LaunchSpec:
    """Per-kernel launch overheads by launch kind."""

    so_call_ns: int = q("so_call_us", Unit.US, allow_zero=True)
    ho_kernel_ns: int = q("ho_kernel_us", Unit.US, allow_zero=True)
    gpu_kernel_ns: int = q("gpu_kernel_us", Unit.US, allow_zero=True)
    # CUDA graphs: a step's kernels replay from the device, gpu_graph_kernel_us each (socket_actor/tile.py)
    cuda_graphs: int = q("cuda_graphs", Unit.COUNT, allow_zero=True, max_value=1)
    gpu_graph_kernel_ns: int = q("gpu_graph_kernel_us", Unit.US, allow_zero=True, max_value=1e3)


@dataclass(frozen=True)
class P2PSpec:
    topology: TopologyKind = q("topology", Unit.CHOICE, choices=TopologyKind)
    link_bw_bytes_per_s: int = q("link_bw_gbps", Unit.GBPS)
    link_latency_ns: int = q("link_latency_us", Unit.US, allow_zero=True)
    chunk_overhead_ns: int = q("chunk_overhead_ns", Unit.NS, allow_zero=True)
    max_frame_bytes: int = q("max_frame_mib", Unit.MIB)
    default_chunks: int = q("default_chunks", Unit.COUNT, max_value=65536)
    timeout_s: float = q("timeout_s", Unit.SECONDS_F)
    scale_out_bw_bytes_per_s: int = q("scale_out_bw_gbps", Unit.GBPS)
    scale_out_latency_ns: int = q("scale_out_latency_us", Unit.US, allow_zero=True)
    collective_fixed_ns: int = q("collective_fixed_us", Unit.US, allow_zero=True)

    def params(self) -> P2PParams:
        return P2PParams(
            topology=self.topology,
            link=LinkParams(self.link_bw_bytes_per_s, self.link_latency_ns),
            chunk_overhead_ns=self.chunk_overhead_ns,
            max_frame_bytes=self.max_frame_bytes,
            default_chunks=self.default_chunks,
            timeout_s=self.timeout_s,
            scale_out=LinkParams(self.scale_out_bw_bytes_per_s, self.scale_out_latency_ns),
        )


@dataclass(frozen=True)
class RuntimeSpec:
    """The host runtime around the device (sn40l_emu/workload/host_runtime.py).

    Per request: tokenization, scheduling, and Program Load + Argument Load when
    a socket switches program (Argument Load alone when only weight addresses
    change). Per output token: logits (host sampling) or token ids over the host
    link, host sampling, the next token back, and the framework's per-token
    cost of each sequence (``token_overhead``, times the batch). GPU profiles:
    the serving framework's per-step overhead (CUDA graphs are a ``launch``
    knob: they change what each kernel launch costs).
    """

    tokenize_ns_per_token: int = q("tokenize_ns_per_token", Unit.NS, allow_zero=True, max_value=1e6)
    schedule_ns: int = q("schedule_us", Unit.US, allow_zero=True, max_value=1e5)
    program_load_ns: int = q("program_load_us", Unit.US, allow_zero=True, max_value=1e6)
    argument_load_ns: int = q("argument_load_us", Unit.US, allow_zero=True, max_value=1e5)
    host_sampling: int = q("host_sampling", Unit.COUNT, allow_zero=True, max_value=1)
    sample_ns: int = q("sample_us", Unit.US, allow_zero=True, max_value=1e5)
    token_overhead_ns: int = q("token_overhead_us", Unit.US, allow_zero=True, max_value=1e5)
    step_overhead_ns: int = q("step_overhead_us", Unit.US, allow_zero=True, max_value=1e5)
    # speculative decoding (workload/speculative.py): draft model name ("" = off), draft length, acceptance
    spec_draft_model: str = q("spec_draft_model", Unit.TEXT)
    spec_draft_len: int = q("spec_draft_len", Unit.COUNT, max_value=64)
    spec_acceptance: float = q("spec_acceptance", Unit.FRACTION, allow_zero=True)
    # DDR per socket kept for the router, KV caches and the runtime (coe/capacity.py)
    ddr_reserved_bytes: int = q("ddr_reserved_gib", Unit.GIB, allow_zero=True)


@dataclass(frozen=True)
class NcclSpec:
    """NCCL's own tuning model for GPU collectives inside one node (sn40l_emu/collectives/nccl.py).

    Constants from NVIDIA/nccl ``src/graph/tuning.cc`` (latencies, LL/LL128 caps,
    NVLS efficiency) and ``src/graph/topo.h``/``search.cc`` (per-link NVLink
    rate, channel search); ``enabled: 0`` keeps the P2P ring model.
    """

    enabled: int = q("enabled", Unit.COUNT, allow_zero=True, max_value=1)
    ring_channels: int = q("ring_channels", Unit.COUNT, allow_zero=True, max_value=64)
    ring_channel_bw_bytes_per_s: int = q("ring_channel_bw_gbps", Unit.GBPS, allow_zero=True)
    ll_max_bw_bytes_per_s: int = q("ll_max_bw_gbps", Unit.GBPS, allow_zero=True)
    ll128_channel_max_bw_bytes_per_s: int = q("ll128_channel_max_bw_gbps", Unit.GBPS, allow_zero=True)
    ll128_enabled: int = q("ll128_enabled", Unit.COUNT, allow_zero=True, max_value=1)
    ring_base_lat_ll_ns: int = q("ring_base_lat_ll_us", Unit.US, allow_zero=True)
    ring_base_lat_ll128_ns: int = q("ring_base_lat_ll128_us", Unit.US, allow_zero=True)
    ring_base_lat_simple_ns: int = q("ring_base_lat_simple_us", Unit.US, allow_zero=True)
    ring_hw_lat_ll_ns: int = q("ring_hw_lat_ll_us", Unit.US, allow_zero=True)
    ring_hw_lat_ll128_ns: int = q("ring_hw_lat_ll128_us", Unit.US, allow_zero=True)
    ring_hw_lat_simple_ns: int = q("ring_hw_lat_simple_us", Unit.US, allow_zero=True)
    nvls_channels: int = q("nvls_channels", Unit.COUNT, allow_zero=True, max_value=64)
    nvls_channel_bw_bytes_per_s: int = q("nvls_channel_bw_gbps", Unit.GBPS, allow_zero=True)
    nvls_efficiency: float = q("nvls_efficiency", Unit.FRACTION, allow_zero=True)
    nvls_lat_ns: int = q("nvls_lat_us", Unit.US, allow_zero=True)
    #: measured busbw / the tuning model's busbw (collectives/nccl.py); may exceed 1: the tuning
    #: model's channel bandwidth is a speed-array step, not the links' ceiling
    bw_efficiency: float = q("bw_efficiency", Unit.FACTOR, max_value=2.0)


@dataclass(frozen=True)
class NodeSpec:
    sockets: int = q("sockets", Unit.COUNT, max_value=1024)
    platform: Platform = q("platform", Unit.CHOICE, choices=Platform)


_SECTIONS: dict[str, type] = {
    "node": NodeSpec,
    "socket": SocketSpec,
    "dma": DmaSpec,
    "host": HostSpec,
    "tile": TileSpec,
    "launch": LaunchSpec,
    "p2p": P2PSpec,
    "runtime": RuntimeSpec,
    "nccl": NcclSpec,
}


@dataclass(frozen=True)
class NodeProfile:
    """A resolved node profile. All quantities in base units (B, B/s, FLOP/s, ns)."""

    name: str
    description: str
    node: NodeSpec
    socket: SocketSpec
    dma: DmaSpec
    host: HostSpec
    tile: TileSpec
    launch: LaunchSpec
    p2p: P2PSpec
    runtime: RuntimeSpec
    nccl: NcclSpec
    sources: tuple[tuple[str, str], ...]  # (yaml path, source note)
    knobs: tuple[str, ...]  # yaml paths of the fields docs/model.md marks as knobs

    @property
    def platform(self) -> Platform:
        return self.node.platform

    @property
    def sockets(self) -> int:
        return self.node.sockets

    def source_of(self, path: str) -> str:
        return dict(self.sources).get(path, "")

    def to_json(self) -> dict[str, Any]:
        """The profile as a document that loads back as the same profile.

        Each leaf is ``{value, source, knob}`` under its YAML key, as in the shipped
        files. Quantities are exact base-unit strings (``"68719476736 B"``,
        ``"50000000000 B/s"``, ``"638000000000000 FLOP/s"``, ``"500 ns"``); counts,
        fractions and choices are plain values. Saving ``profile show --json`` to
        ``mine.json`` and passing ``--profile mine.json`` gives the same nanoseconds.
        """
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for section, cls in _SECTIONS.items():
            obj = getattr(self, section)
            leaves: dict[str, Any] = {}
            for attr, spec in field_specs(cls):
                path = f"{section}.{spec.yaml_key}"
                leaves[spec.yaml_key] = {"value": base_value_text(getattr(obj, attr), spec.unit),
                                         "source": self.source_of(path), "knob": path in self.knobs}
            out[section] = leaves
        return out


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped inside the package."""
    root = resources.files("sn40l_emu") / "profiles"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    try:
        is_path = name_or_path.endswith((".yaml", ".yml", ".json")) or path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        raise ConfigError("profile", name_or_path, "a shipped profile name or an existing YAML file") from None
    if is_path:
        if not path.is_file():
            raise ConfigError("profile", name_or_path, "a shipped profile name or an existing YAML file")
    else:
        res = resources.files("sn40l_emu") / "profiles" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError("profile", name_or_path,
                              "one of " + ", ".join(shipped_profiles()) + ", or a path to a YAML file")
        return copy.deepcopy(_shipped_raw(name_or_path)), name_or_path
    return yaml_load.load_yaml_mapping(path, "profile"), name_or_path


@cache
def _shipped_raw(name: str) -> dict[str, Any]:
    """A shipped profile's mapping, parsed once per process (callers get a deep copy)."""
    res = resources.files("sn40l_emu") / "profiles" / f"{name}.yaml"
    return yaml_load.load_yaml_mapping(Path(str(res)), "profile")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "value" not in value:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(name_or_path: str, _depth: int = 0) -> dict[str, Any]:
    """The profile's YAML mapping with ``extends`` resolved."""
    data, _ = _read_yaml(name_or_path)
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str) or _depth > 8:
            raise ConfigError("extends", parent, "the name or path of another profile (no cycles)")
        data = _merge(load_raw(parent, _depth + 1), data)
    return data


def parse_override(text: str) -> tuple[str, object]:
    """``"p2p.link_bw_gbps=25"`` -> (path, value); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError("--set", text, "KEY=VALUE, e.g. p2p.link_bw_gbps=25")
    key, _, value = text.partition("=")
    parsed = yaml_load.parse_scalar(value, f"--set {key.strip()[:64]}") if value.strip() else value
    return key.strip(), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        parts = path.split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(path, value, "SECTION.FIELD with SECTION one of " + ", ".join(_SECTIONS))
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(parts[0], section, "a mapping of fields")
        old = section.get(parts[1])
        knob = isinstance(old, dict) and bool(old.get("knob", False))
        section[parts[1]] = {"value": value, "source": f"override (--set {path})", "knob": knob}
    return data


def load_profile(name_or_path: str = "sn40l", overrides: list[str] | tuple[str, ...] = ()) -> NodeProfile:
    """Load, merge, override and validate a node profile (raises ConfigError)."""
    raw = apply_overrides(load_raw(name_or_path), overrides)
    known = {"name", "description", *_SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(unknown[0], raw[unknown[0]], "one of the top-level keys: " + ", ".join(sorted(known)))
    sources: dict[str, str] = {}
    knobs: set[str] = set()
    sections = {}
    for key, cls in _SECTIONS.items():
        if key not in raw:
            raise ConfigError(key, "<missing>", "a mapping of fields (required section)")
        sections[key] = build_section(cls, key, raw[key], sources, knobs)
    name, _, _ = split_leaf("name", raw.get("name", Path(name_or_path).stem))
    desc, _, _ = split_leaf("description", raw.get("description", ""))
    profile = NodeProfile(
        name=str(name), description=str(desc), sources=tuple(sorted(sources.items())),
        knobs=tuple(sorted(knobs)), **sections,
    )
    _check_consistency(profile)
    return profile


def _check_consistency(p: NodeProfile) -> None:
    """Cross-field rules that a single field's range cannot express."""
    if p.platform is Platform.SN40L and p.socket.ddr_bytes == 0:
        raise ConfigError("socket.ddr_tib", 0, "> 0 on an sn40l platform (DDR is its third tier)")
    if p.socket.ddr_bytes > 0 and (p.socket.ddr_bw_bytes_per_s == 0 or p.dma.ddr_hbm_bw_bytes_per_s == 0):
        raise ConfigError("dma.ddr_hbm_gbps", 0, "> 0 when the socket has DDR")


def with_changes(profile: NodeProfile, section: str, **changes: Any) -> NodeProfile:
    """A copy of ``profile`` with some base-unit fields of one section replaced (injection, tests)."""
    new_section = dataclasses.replace(getattr(profile, section), **changes)
    return dataclasses.replace(profile, **{section: new_section})
