"""Host runtime (workload/host_runtime.py) and NCCL's tuning model (collectives/nccl.py): exact ns."""

from __future__ import annotations

import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.collectives.nccl import Proto, nccl_choice
from sn40l_emu.config import load_profile
from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
from sn40l_emu.program import CollectiveKind, CollectiveOp, Program
from sn40l_emu.workload import load_model
from sn40l_emu.workload.host_runtime import decode_step_ns, generate_ns, prefill_ns, token_ns

SN40L, A100, H100 = load_profile("sn40l"), load_profile("dgx-a100"), load_profile("dgx-h100")
LLAMA2 = load_model("llama2-7b")


# ---- host runtime ------------------------------------------------------------------------------
def test_sn40l_token_closed_form() -> None:
    # logits of one sequence (32000 x 2 B) over a 31.5 GB/s link, 1 us latency each way, 10 us sampling
    t = token_ns(SN40L, 32000, 1).by_name()
    assert t["token_out"] == 1_000 + -(-64_000 * 10**9 // 31_500_000_000)
    assert t["token_back"] == 1_000 + 1  # 4 B at 31.5 GB/s rounds up to 1 ns
    # token_overhead is calibrated (runtime.token_overhead_us; tests/test_calibrate_shipped.py)
    assert t["sample"] == 10_000 and t["token_overhead"] == SN40L.runtime.token_overhead_ns


def test_gpu_token_ids_only_and_no_program_load() -> None:
    t = token_ns(H100, 32000, 8).by_name()
    rate = H100.host.link_bw_bytes_per_s // H100.sockets  # one 64 GB/s link shared by 8 GPUs
    assert t["token_out"] == 1_000 + -(-32 * 10**9 // rate) and t["sample"] == 0
    g = generate_ns(H100, 32000, 1, 128, 20).by_name()
    assert g["program_load"] == 0 and g["argument_load"] == 0


def test_generate_is_request_two_loads_and_n_tokens() -> None:
    n, prompt, batch = 20, 128, 2
    g = generate_ns(SN40L, 32000, batch, prompt, n)
    r = SN40L.runtime
    tok = token_ns(SN40L, 32000, batch).total_ns
    want = prompt * batch * 80 + r.schedule_ns + 2 * (r.program_load_ns + r.argument_load_ns) + n * tok
    assert g.total_ns == want
    assert prefill_ns(SN40L, 32000, batch, prompt).total_ns == prompt * batch * 80 + r.schedule_ns + (
        r.program_load_ns + r.argument_load_ns) + tok
    assert [e.track for e in g.events(0)] and {e.track for e in g.events(0)} == {"host"}
    assert sum(e.dur_ns for e in g.events(0)) == g.total_ns


@pytest.mark.parametrize("phase", ["prefill", "decode", "generate"])
def test_rows_carry_the_host_time_exactly(phase: str) -> None:
    cfg = ScalingConfig(tps=(8,), phases=(phase,) if phase != "generate" else ("decode",), modes=("fused-ho",),
                        tokens=3 if phase == "generate" else 0)
    off = ("runtime.tokenize_ns_per_token=0", "runtime.schedule_us=0", "runtime.program_load_us=0",
           "runtime.argument_load_us=0", "runtime.sample_us=0", "host.link_latency_us=0",
           "runtime.host_sampling=0")
    on_rows = [r for r in run_scaling(cfg) if r["phase"] == phase]
    bare = [r for r in run_scaling(ScalingConfig(**{**cfg.__dict__, "overrides": off})) if r["phase"] == phase]
    row, base = on_rows[0], bare[0]
    want = {"prefill": prefill_ns, "decode": None, "generate": None}[phase]
    host = (want(SN40L, 32000, 1, 128) if want else decode_step_ns(SN40L, 32000, 1) if phase == "decode"
            else generate_ns(SN40L, 32000, 1, 128, 3))
    assert row["breakdown_ns"]["host"] == host.total_ns == sum(row["host_ns"].values())
    assert row["latency_ns"] - base["latency_ns"] == host.total_ns - base["breakdown_ns"]["host"]
    assert sum(row["breakdown_ns"].values()) == row["latency_ns"]


def test_cuda_graphs_replace_per_kernel_launches() -> None:
    on = run_scaling(ScalingConfig(tps=(8,), phases=("decode",), profile="dgx-h100",
                                   overrides=("launch.cuda_graphs=1",)))[0]
    off = run_scaling(ScalingConfig(tps=(8,), phases=("decode",), profile="dgx-h100"))[0]
    kernels = off["breakdown_ns"]["launch"] // H100.launch.gpu_kernel_ns
    assert on["breakdown_ns"]["launch"] == kernels * H100.launch.gpu_graph_kernel_ns
    assert on["latency_ns"] < off["latency_ns"]


# ---- NCCL --------------------------------------------------------------------------------------
def test_nccl_small_all_reduce_is_ring_ll() -> None:
    c = nccl_choice(H100.nccl, CollectiveKind.ALL_REDUCE, 8, 8192)
    assert c is not None and (c.algo, c.proto) == ("ring", Proto.LL)
    # tuning.cc: baseLat 6.6 + 2(n-1) x hwLat 0.6 us; busBw min(llMaxBw 141, 360/2) = 141 GB/s,
    # algbw = busBw x n / (2(n-1))
    # x nccl.bw_efficiency (measured / tuning-model busbw, calibrated on nccl-tests)
    lat = 6_600 + 14 * 600
    algbw = int(141e9 * (8 / 14 * H100.nccl.bw_efficiency))
    assert c.latency_ns == lat and c.time_ns == lat + -(-8192 * 10**9 // algbw)


def test_nccl_h100_large_all_reduce_is_nvls_a100_ring_simple() -> None:
    size = 1 << 30
    h = nccl_choice(H100.nccl, CollectiveKind.ALL_REDUCE, 8, size)
    a = nccl_choice(A100.nccl, CollectiveKind.ALL_REDUCE, 8, size)
    assert h is not None and a is not None
    assert (h.algo, h.proto) == ("nvls", Proto.SIMPLE) and (a.algo, a.proto) == ("ring", Proto.SIMPLE)
    nvls_bus = 8 * 40e9 * 0.85 * 7 / 8 * 2
    assert h.time_ns == 25_000 + -(-size * 10**9 // int(nvls_bus * (8 / 14 * H100.nccl.bw_efficiency)))
    assert a.time_ns == 8_400 + 14 * 3_400 + -(-size * 10**9 // int(240e9 * (8 / 14 * A100.nccl.bw_efficiency)))


def test_mid_size_picks_ll128_on_a100() -> None:
    c = nccl_choice(A100.nccl, CollectiveKind.ALL_REDUCE, 8, 16 << 20)
    assert c is not None and c.proto is Proto.LL128


@pytest.mark.parametrize("size", [4096, 1 << 20, 1 << 24])
def test_dgx_all_reduce_program_takes_nccls_time(size: int) -> None:
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, tuple(range(8)), (size // 2,), "bfloat16")
    r = LocalNode(H100, trace=True).run_programs({s: Program("p", (op,)) for s in range(8)})[0]
    c = nccl_choice(H100.nccl, op.kind, 8, op.size_bytes)
    assert c is not None and r.duration_ns == r.breakdown_ns["collectives"] == c.time_ns
    assert "nccl" in {e.track for e in r.events}


def test_nccl_disabled_falls_back_to_p2p() -> None:
    prof = load_profile("dgx-h100", ["nccl.enabled=0"])
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, tuple(range(8)), (4096,), "bfloat16")
    r = LocalNode(prof, trace=True).run_programs({s: Program("p", (op,)) for s in range(8)})[0]
    assert "nccl" not in {e.track for e in r.events}
    assert r.duration_ns >= prof.p2p.collective_fixed_ns
