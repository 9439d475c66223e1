"""What in a GPU serving step grows with the batch, each in closed form (exact ns).

* host work per output token *per sequence* (``runtime.token_overhead_us``:
  detokenize, stop checks, streaming out) is paid once per sequence of a step;
* weight streaming runs at the measured HBM efficiency (``tile.hbm_stream_efficiency``)
  and does not grow with the batch; KV reads and prefill compute do.
"""

from __future__ import annotations

import pytest

from sn40l_emu import units
from sn40l_emu.config import load_profile
from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
from sn40l_emu.program import KernelOp, Launch, MemStream, Stage, StreamKind, Tier
from sn40l_emu.socket_actor.tile import kernel_cost
from sn40l_emu.workload.host_runtime import token_ns

A100, H100 = load_profile("dgx-a100"), load_profile("dgx-h100")
OVERHEAD = ("runtime.token_overhead_us=150", "runtime.step_overhead_us=1000")


@pytest.mark.parametrize("batch", [1, 2, 8])
def test_token_overhead_is_paid_per_sequence(batch: int) -> None:
    t = token_ns(A100, 32000, batch).by_name()
    assert t["token_overhead"] == batch * A100.runtime.token_overhead_ns


@pytest.mark.parametrize("profile", ["dgx-a100", "dgx-h100"])
def test_decode_row_host_time_grows_by_the_per_sequence_overhead(profile: str) -> None:
    # one decode step: 1 ms step overhead once, 150 us per sequence, token ids over the host link
    rows = {b: run_scaling(ScalingConfig(tps=(8,), phases=("decode",), profile=profile, batch=b,
                                         overrides=OVERHEAD))[0] for b in (1, 8)}
    for b, row in rows.items():
        assert row["host_ns"]["step_overhead"] == 1_000_000
        assert row["host_ns"]["token_overhead"] == b * 150_000
        assert sum(row["breakdown_ns"].values()) == row["latency_ns"]
    assert rows[8]["breakdown_ns"]["host"] - rows[1]["breakdown_ns"]["host"] == (
        7 * 150_000 + sum(rows[8]["host_ns"][k] - rows[1]["host_ns"][k] for k in ("token_out", "token_back")))


def test_generate_request_pays_tokens_times_batch_overheads() -> None:
    # prefill + 19 decode steps = 20 steps and 20 output tokens per sequence
    row = run_scaling(ScalingConfig(tps=(8,), phases=("generate",), profile="dgx-h100", batch=8, tokens=20,
                                    overrides=OVERHEAD))
    gen = next(r for r in row if r["phase"] == "generate")
    assert gen["host_ns"]["token_overhead"] == 20 * 8 * 150_000
    assert gen["host_ns"]["step_overhead"] == 20 * 1_000_000


@pytest.mark.parametrize(("profile", "rate_bytes_per_s"), [
    (A100, 1_789_222_500_000),  # 0.8775 x 2.039 TB/s (babelstream add on A100-SXM4-80GB)
    (H100, 2_999_925_000_000),  # 0.8955 x 3.35 TB/s (FlashMLA on H800 SXM5)
])
def test_gpu_weights_stream_at_the_measured_hbm_rate(profile, rate_bytes_per_s: int) -> None:
    op = KernelOp("gemv", (Stage("s", 1000, 0),), (MemStream(Tier.HBM, 10**9, StreamKind.WEIGHTS),),
                  Launch.GPU, True)
    c = kernel_cost(op, profile.socket, profile.tile, profile.launch, 1)
    assert c.bound == "hbm"
    assert c.body_ns == units.transfer_ns(10**9, rate_bytes_per_s)
    assert c.attribution_ns["weights"] == c.body_ns
