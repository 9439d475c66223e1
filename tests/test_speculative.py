"""Speculative decoding (workload/speculative.py) in tp-scaling: closed form and rows."""

from __future__ import annotations

import dataclasses

import pytest

from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.rows import per_token_ns
from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
from sn40l_emu.workload.speculative import expected_tokens, verify_step


@pytest.mark.parametrize(("a", "k", "want"), [
    (0.0, 4, 1.0), (1.0, 4, 5.0), (0.5, 1, 1.5), (0.5, 3, 1.875), (0.8, 4, (1 - 0.8 ** 5) / 0.2),
])
def test_expected_tokens_closed_form(a: float, k: int, want: float) -> None:
    assert expected_tokens(a, k) == pytest.approx(want, rel=1e-12)


def test_verify_step_covers_the_drafts() -> None:
    s = verify_step(2, 100, 4)
    assert (s.batch, s.new_tokens, s.context_len, s.tokens) == (2, 5, 100, 10)


CFG = ScalingConfig(model="llama2-7b", tps=(8,), phases=("speculative",), modes=("fused-ho",),
                    overrides=("runtime.spec_draft_model=tiny-llama", "runtime.spec_draft_len=3",
                               "runtime.spec_acceptance=0.6"))


def test_speculative_row_rate_and_breakdown() -> None:
    row = run_scaling(CFG)[0]
    e = expected_tokens(0.6, 3)
    assert row["phase"] == "speculative"
    assert sum(row["breakdown_ns"].values()) == row["latency_ns"]
    assert row["tokens_per_s_per_user"] == pytest.approx(e * 1e9 / row["latency_ns"])
    assert per_token_ns(row) == pytest.approx(row["latency_ns"] / e)
    # acceptance changes the expected tokens, not the iteration's time
    other = run_scaling(dataclasses.replace(CFG, overrides=(*CFG.overrides[:2], "runtime.spec_acceptance=0.9")))[0]
    assert other["latency_ns"] == row["latency_ns"]
    assert other["tokens_per_s_per_user"] > row["tokens_per_s_per_user"]
    # a longer draft adds draft steps and verify tokens
    longer = run_scaling(dataclasses.replace(CFG, overrides=(CFG.overrides[0], "runtime.spec_draft_len=6",
                                                             CFG.overrides[2])))[0]
    assert longer["latency_ns"] > row["latency_ns"]


def test_speculative_needs_a_draft_model() -> None:
    with pytest.raises(ConfigError) as err:
        run_scaling(dataclasses.replace(CFG, overrides=()))
    assert err.value.field == "runtime.spec_draft_model"


def test_one_iteration_is_k_draft_steps_then_one_verify_step_exactly() -> None:
    """Exact ns: the row is k draft decode steps, then the target's step over k + 1 tokens, then one host
    round trip; tokens/s/user is E[tokens] = (1 - a^(k+1)) / (1 - a) over that (a = 0.5, k = 3: 1.875).

    The iteration is rebuilt here step by step on a plain node (no step reuse), independent of run_scaling.
    """
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.workload import ExecMode, Phase, Step, load_model, make_plan
    from sn40l_emu.workload.host_runtime import decode_step_ns, step_ns

    k, ctx, tp = 3, 128, 2
    over = ("runtime.spec_draft_model=tiny-gqa", f"runtime.spec_draft_len={k}", "runtime.spec_acceptance=0.5")
    row = run_scaling(ScalingConfig(model="tiny-llama", tps=(tp,), phases=("speculative",), modes=("fused-ho",),
                                    overrides=over, prompt_len=ctx, context_len=ctx))[0]
    profile = load_profile("sn40l", list(over))
    target, draft = load_model("tiny-llama"), load_model("tiny-gqa")
    node = LocalNode(profile, trace=False)
    reuse, book = CostReuse(node, steps=False), ProgramBook()
    steps = [(draft, Step.decode(1, ctx + i)) for i in range(k)] + [(target, Step(Phase.DECODE, 1, k + 1, ctx))]
    ends = {}
    for model, step in steps:
        ends = {s: r.end_ns for s, r in reuse.run(book.group(model, make_plan(model, tp), step,
                                                                ExecMode.FUSED_HO)).items()}
    device_ns = max(ends.values())
    host_ns = decode_step_ns(profile, target.vocab_size, 1).total_ns + k * step_ns(profile).total_ns
    assert row["latency_ns"] == device_ns + host_ns
    assert row["breakdown_ns"]["host"] == host_ns
    assert row["tokens_per_s_per_user"] == pytest.approx(1.875e9 / row["latency_ns"], rel=1e-12)
    # the verify step is one target step over k + 1 tokens: more than a plain decode step, less than k + 1 of them
    plain = run_scaling(ScalingConfig(model="tiny-llama", tps=(tp,), phases=("decode",), modes=("fused-ho",),
                                      prompt_len=ctx, context_len=ctx))[0]
    assert row["latency_ns"] > plain["latency_ns"]
