"""Capacity under both definitions (coe/capacity.py): switching allowed vs served at TP8 latency."""

from __future__ import annotations

from sn40l_emu.coe.capacity import experts_per_node
from sn40l_emu.config import load_profile
from sn40l_emu.units import GiB, ceil_div, transfer_ns
from sn40l_emu.workload import load_model

MODEL = load_model("llama2-7b")
KV = 8 * 328 * MODEL.kv_bytes_per_token


def test_sn40l_serves_every_ddr_expert_at_tp8_latency_less_the_reserved_ddr() -> None:
    p = load_profile("sn40l")
    cap = experts_per_node(p, MODEL.weight_bytes, MODEL.weight_bytes, KV)
    shard = ceil_div(MODEL.weight_bytes, 8)
    assert cap.total_experts == (p.socket.ddr_bytes - 64 * GiB) // shard
    assert cap.latency_experts == cap.total_experts
    assert cap.switch_ns == transfer_ns(shard, p.dma.ddr_hbm_bw_bytes_per_s)
    more = experts_per_node(load_profile("sn40l", ["runtime.ddr_reserved_gib=0"]), MODEL.weight_bytes,
                            MODEL.weight_bytes, KV)
    assert more.total_experts == p.socket.ddr_bytes // shard > cap.total_experts


def test_gpu_at_tp8_latency_serves_only_what_sits_in_hbm() -> None:
    for name in ("dgx-a100", "dgx-h100"):
        p = load_profile(name)
        cap = experts_per_node(p, MODEL.weight_bytes, MODEL.weight_bytes, KV)
        shard = ceil_div(MODEL.weight_bytes, 8)
        region = p.socket.hbm_bytes - ceil_div(MODEL.weight_bytes, 8) - ceil_div(KV, 8)
        assert cap.latency_experts == cap.hbm_experts == region // shard
        assert cap.total_experts == p.host.dram_bytes // MODEL.weight_bytes > cap.latency_experts
        assert cap.switch_ns == transfer_ns(MODEL.weight_bytes, p.host.link_bw_bytes_per_s * p.host.links)
