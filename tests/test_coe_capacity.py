"""Expert capacity of a node on the shipped profiles (Llama2-7B-sized experts)."""

from __future__ import annotations

import pytest

from sn40l_emu.coe.capacity import (
    ExpertTier,
    expert_region_bytes,
    expert_shard_bytes,
    experts_per_node,
    hbm_expert_slots,
    nodes_needed,
)
from sn40l_emu.config import NodeProfile, load_profile, with_changes
from sn40l_emu.errors import ConfigError, OutOfMemory
from sn40l_emu.units import GiB, TiB

EXPERT = 13_480_000_000  # Llama2-7B: 6.74e9 params x 2 B (docs/model.md §6)
SHARD = EXPERT // 8  # 1_685_000_000, TP8
ROUTER = EXPERT  # the router has the experts' shape (docs/model.md §4)


@pytest.fixture(scope="module")
def sn40l() -> NodeProfile:
    return load_profile("sn40l")


@pytest.fixture(scope="module", params=["dgx-a100", "dgx-h100"])
def dgx(request: pytest.FixtureRequest) -> NodeProfile:
    return load_profile(request.param)


def test_sn40l_llama7b(sn40l: NodeProfile) -> None:
    cap = experts_per_node(sn40l, EXPERT, ROUTER, 0)
    assert cap.expert_shard_bytes == SHARD
    assert cap.hbm_region_bytes == 64 * GiB - SHARD == 67_034_476_736
    assert cap.hbm_experts == 39  # 39 x 1.685e9 = 65.7e9 <= 67.03e9 < 40 x 1.685e9
    assert cap.total_experts == cap.backing_experts == 938  # (1.5 TiB - 64 GiB reserved) // 1.685e9
    assert (cap.backing_tier, cap.limiting_tier) == (ExpertTier.DDR, ExpertTier.DDR)
    assert cap.home_tier(150) is ExpertTier.DDR and cap.home_tier(10) is ExpertTier.DDR
    assert hbm_expert_slots(sn40l, EXPERT, ROUTER, 0) == 39
    assert expert_region_bytes(sn40l, ROUTER, 0) == cap.hbm_region_bytes
    assert nodes_needed(150, sn40l, EXPERT, ROUTER, 0) == 1  # the paper's 150-expert CoE
    assert nodes_needed(1000, sn40l, EXPERT, ROUTER, 0) == 2


def test_dgx_llama7b(dgx: NodeProfile) -> None:
    cap = experts_per_node(dgx, EXPERT, ROUTER, 0)
    assert cap.hbm_region_bytes == 80 * GiB - SHARD
    assert cap.hbm_experts == 49  # 84.21e9 // 1.685e9
    assert cap.backing_experts == 163  # 2 TiB host DRAM // 13.48e9 (whole experts)
    assert cap.total_experts == 163
    assert (cap.backing_tier, cap.limiting_tier) == (ExpertTier.HOST, ExpertTier.HOST)
    assert cap.home_tier(49) is ExpertTier.HBM
    assert cap.home_tier(150) is ExpertTier.HOST
    assert nodes_needed(150, dgx, EXPERT, ROUTER, 0) == 1
    assert nodes_needed(500, dgx, EXPERT, ROUTER, 0) == 4  # ceil(500 / 163)
    with pytest.raises(ConfigError, match="n_experts"):
        cap.home_tier(164)


def test_sn40l_holds_far_more_than_dgx(sn40l: NodeProfile, dgx: NodeProfile) -> None:
    ours = experts_per_node(sn40l, EXPERT, ROUTER, 0)
    theirs = experts_per_node(dgx, EXPERT, ROUTER, 0)
    assert ours.total_experts > 5 * theirs.total_experts
    assert ours.total_experts > 15 * theirs.hbm_experts
    assert sn40l.sockets * sn40l.socket.ddr_bytes == 12 * TiB
    assert dgx.host.dram_bytes == 2 * TiB


def test_kv_reservation_shrinks_the_region(sn40l: NodeProfile) -> None:
    kv = 8 * 4096 * 512 * 1024  # batch 8 x 4096 tokens x 512 KiB (Llama2-7B, docs/model.md §6)
    cap = experts_per_node(sn40l, EXPERT, ROUTER, kv)
    assert cap.reserved_hbm_bytes == SHARD + kv // 8
    assert cap.hbm_experts == (64 * GiB - SHARD - kv // 8) // SHARD == 38
    assert cap.total_experts == 938  # DDR is unaffected


def test_hbm_runs_out_when_no_expert_fits(sn40l: NodeProfile, dgx: NodeProfile) -> None:
    for profile in (sn40l, dgx):
        kv = profile.sockets * (profile.socket.hbm_bytes - SHARD) - ROUTER + 8  # 1 B short
        cap = experts_per_node(profile, EXPERT, ROUTER, kv)
        assert (cap.hbm_experts, cap.total_experts) == (0, 0)
        assert cap.limiting_tier is ExpertTier.HBM
        with pytest.raises(OutOfMemory, match="active expert"):
            nodes_needed(10, profile, EXPERT, ROUTER, kv)
        ok = experts_per_node(profile, EXPERT, ROUTER, kv - 8)
        assert ok.hbm_experts == 1


def test_gpu_limited_by_hbm_when_host_is_small(dgx: NodeProfile) -> None:
    small_host = with_changes(dgx, "host", dram_bytes=10 * EXPERT)
    cap = experts_per_node(small_host, EXPERT, ROUTER, 0)
    assert (cap.backing_experts, cap.total_experts) == (10, 49)
    assert cap.limiting_tier is ExpertTier.HBM
    assert cap.home_tier(49) is ExpertTier.HBM


def test_shards_round_up_and_inputs_checked(sn40l: NodeProfile) -> None:
    assert expert_shard_bytes(sn40l, 17) == 3
    with pytest.raises(ConfigError, match="expert_bytes"):
        experts_per_node(sn40l, 0, ROUTER, 0)
    with pytest.raises(ConfigError, match="kv_bytes"):
        experts_per_node(sn40l, EXPERT, ROUTER, -1)
    with pytest.raises(ConfigError, match="n_experts"):
        nodes_needed(-1, sn40l, EXPERT, ROUTER, 0)
    assert nodes_needed(0, sn40l, EXPERT, ROUTER, 0) == 0
