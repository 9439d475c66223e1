"""How many experts one node can hold and serve: pure capacity arithmetic.

All inputs are whole-model bytes for the node; every model is TP-sharded over
all ``S = profile.sockets`` sockets (docs/model.md §2: experts are mapped TP8 over
the eight sockets; docs/model.md §5: the DGX maps them TP8 over its eight GPUs), so
each socket holds one shard of each and all sockets hold the same set:

    shard_bytes      = ceil(expert_bytes / S)
    reserved_bytes   = ceil(router_bytes / S) + ceil(kv_bytes / S)
    region_bytes     = max(0, hbm_bytes - reserved_bytes)     # per socket
    hbm_experts      = region_bytes // shard_bytes            # at once, in HBM

Router and KV caches stay in HBM on both platforms (docs/model.md §4, §5); what is
left is the active-expert region, the HBM cache's capacity. A node that
cannot fit even one expert shard there cannot serve at all (total 0, HBM is
the tier that runs out).

SN40L (docs/model.md §4: "all expert weights live in DDR; a region of HBM is set
aside for the currently active expert(s)"; docs/model.md §1: 1.5 TiB DDR/socket),
less the DDR kept for the router, KV caches and runtime (``runtime.ddr_reserved_gib``):

    total_experts    = (ddr_bytes - ddr_reserved) // shard_bytes    (per socket = per node, TP8)
    served from DDR, limited by DDR

GPU / DGX (docs/model.md §5: "experts in GPU HBM while they fit, otherwise in host
DRAM and copied in over PCIe"). Host DRAM is one pool for the node, so a host
copy is the whole expert:

    host_experts     = host.dram_bytes // expert_bytes
    total_experts    = max(hbm_experts, host_experts)

While the composition fits in HBM (n <= hbm_experts) every expert lives in HBM
and nothing else is needed. Beyond that the host holds every expert and HBM
caches hbm_experts of them, as DDR does for the SN40L: an expert evicted from
HBM must still exist somewhere, so HBM and host capacities do not add up.
The limiting tier is the one that sets ``total_experts``.

Two definitions of capacity (both reported by ``sn40l-emu capacity``):

* ``total_experts``: experts that fit when switching an expert in from the
  backing tier (DDR, host DRAM) is allowed;
* ``latency_experts``: experts that can be served at TP8 latency. On a GPU a
  switch from host memory (``expert_bytes / host rate``: about a second for a 7B
  expert at 64 GB/s) is no TP8 latency, so every expert must sit in HBM:
  ``latency_experts = hbm_experts`` when the composition fits there, else the
  HBM count. On the SN40L the DDR -> HBM switch (``shard / ddr_hbm rate`` per
  socket, all sockets in parallel) counts inside the latency, so
  ``latency_experts = total_experts``. ``switch_ns`` is that switch time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sn40l_emu.config import NodeProfile, Platform
from sn40l_emu.errors import ConfigError, OutOfMemory
from sn40l_emu.units import ceil_div, transfer_ns


class ExpertTier(str, Enum):
    """Where expert weights live."""

    HBM = "hbm"
    DDR = "ddr"
    HOST = "host"


@dataclass(frozen=True)
class CapacityResult:
    """Expert capacity of one node for one expert size (see the module docstring)."""

    platform: Platform
    sockets: int
    expert_shard_bytes: int  # per socket
    reserved_hbm_bytes: int  # per socket: router shard + KV shard
    hbm_region_bytes: int  # per socket: HBM left for experts (the cache capacity)
    hbm_experts: int  # experts resident in HBM at once (the fast tier)
    backing_tier: ExpertTier  # DDR on SN40L, HOST on a GPU node
    backing_experts: int  # experts the backing tier alone could hold
    total_experts: int  # experts the node can hold and serve (switching from the backing tier allowed)
    limiting_tier: ExpertTier  # the tier that sets total_experts
    latency_experts: int = 0  # experts served at TP8 latency (GPU: HBM only; SN40L: DDR, switch inside)
    switch_ns: int = 0  # one expert's switch from the backing tier into HBM

    def home_tier(self, n_experts: int) -> ExpertTier:
        """The tier a composition of ``n_experts`` is served from on this node.

        SN40L: always DDR (HBM only holds copies). GPU: HBM while all fit,
        otherwise host DRAM.
        """
        if not 1 <= n_experts <= self.total_experts:
            raise ConfigError("n_experts", n_experts, f"1..{self.total_experts} on one node")
        if self.platform is Platform.GPU and n_experts <= self.hbm_experts:
            return ExpertTier.HBM
        return self.backing_tier


def expert_region_bytes(profile: NodeProfile, router_bytes: int, kv_bytes: int) -> int:
    """Per-socket HBM left for experts once the router and KV shards are placed.

    This is the ``capacity_bytes`` of the HBM expert cache.
    """
    return max(0, profile.socket.hbm_bytes - _reserved_bytes(profile, router_bytes, kv_bytes))


def _reserved_bytes(profile: NodeProfile, router_bytes: int, kv_bytes: int) -> int:
    if router_bytes < 0:
        raise ConfigError("router_bytes", router_bytes, ">= 0")
    if kv_bytes < 0:
        raise ConfigError("kv_bytes", kv_bytes, ">= 0")
    return ceil_div(router_bytes, profile.sockets) + ceil_div(kv_bytes, profile.sockets)


def expert_shard_bytes(profile: NodeProfile, expert_bytes: int) -> int:
    """One socket's TP shard of an expert: ceil(expert_bytes / sockets)."""
    if expert_bytes <= 0:
        raise ConfigError("expert_bytes", expert_bytes, "> 0")
    return ceil_div(expert_bytes, profile.sockets)


def _shards(profile: NodeProfile, expert_bytes: int, router_bytes: int,
            kv_bytes: int) -> tuple[int, int, int]:
    """(expert shard, reserved, region) bytes per socket."""
    shard = expert_shard_bytes(profile, expert_bytes)
    reserved = _reserved_bytes(profile, router_bytes, kv_bytes)
    return shard, reserved, max(0, profile.socket.hbm_bytes - reserved)


def hbm_expert_slots(profile: NodeProfile, expert_bytes: int, router_bytes: int,
                     kv_bytes: int) -> int:
    """Experts that fit in HBM at once after the router and KV (the cache's size in experts)."""
    shard, _, region = _shards(profile, expert_bytes, router_bytes, kv_bytes)
    return region // shard


def experts_per_node(profile: NodeProfile, expert_bytes: int, router_bytes: int,
                     kv_bytes: int) -> CapacityResult:
    """How many experts of ``expert_bytes`` one node holds; formulas in the module docstring."""
    shard, reserved, region = _shards(profile, expert_bytes, router_bytes, kv_bytes)
    hbm_experts = region // shard
    if profile.platform is Platform.SN40L:
        backing_tier = ExpertTier.DDR
        backing = max(0, profile.socket.ddr_bytes - profile.runtime.ddr_reserved_bytes) // shard
        total = backing if hbm_experts > 0 else 0
        limiting = ExpertTier.DDR if hbm_experts > 0 else ExpertTier.HBM
        latency = total  # the DDR -> HBM switch counts inside the latency
        switch = transfer_ns(shard, profile.dma.ddr_hbm_bw_bytes_per_s)
    else:
        backing_tier = ExpertTier.HOST
        backing = profile.host.dram_bytes // expert_bytes
        if hbm_experts == 0:
            total, limiting = 0, ExpertTier.HBM
        elif backing > hbm_experts:
            total, limiting = backing, ExpertTier.HOST
        else:
            total, limiting = hbm_experts, ExpertTier.HBM
        latency = hbm_experts  # no switch from host memory at TP8 latency: all in HBM
        switch = transfer_ns(expert_bytes, profile.host.link_bw_bytes_per_s * profile.host.links)
    return CapacityResult(
        platform=profile.platform, sockets=profile.sockets, expert_shard_bytes=shard,
        reserved_hbm_bytes=reserved, hbm_region_bytes=region, hbm_experts=hbm_experts,
        backing_tier=backing_tier, backing_experts=backing, total_experts=total,
        limiting_tier=limiting, latency_experts=latency, switch_ns=switch,
    )


def nodes_needed(n_experts: int, profile: NodeProfile, expert_bytes: int, router_bytes: int,
                 kv_bytes: int) -> int:
    """ceil(n_experts / total_experts): nodes for a composition (each node has its own router).

    Raises OutOfMemory when not one expert shard fits in the HBM left after
    the router and KV, because then no number of nodes helps.
    """
    if n_experts < 0:
        raise ConfigError("n_experts", n_experts, ">= 0")
    cap = experts_per_node(profile, expert_bytes, router_bytes, kv_bytes)
    if cap.total_experts == 0:
        raise OutOfMemory(ExpertTier.HBM.value, cap.expert_shard_bytes, cap.hbm_region_bytes,
                          what="one active expert shard after router and KV")
    return ceil_div(n_experts, cap.total_experts)
