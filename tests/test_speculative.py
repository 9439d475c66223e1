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
