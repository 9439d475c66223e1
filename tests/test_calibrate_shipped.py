"""The shipped profiles' calibrated knobs are what `sn40l-emu calibrate` fits to the shipped cases.

Each calibrated knob's ``source:`` names the case file and the case ids it was
fitted on; refitting from 5 % off the shipped value on exactly those cases must
come back to the shipped value (it is the least-squares optimum, to the 4
significant digits the profile keeps). Slow-ish: these are full-size runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sn40l_emu.config import load_profile
from sn40l_emu.experiments.calibrate import calibrate_platform, current_value, knob_spec
from sn40l_emu.experiments.cases import load_cases

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# (platform, knob, case file): every knob the shipped profiles say is calibrated
SHIPPED = [
    ("dgx-a100", "runtime.step_overhead_us", "validation/nemo-llama2-7b.yaml"),
    ("dgx-a100", "runtime.token_overhead_us", "validation/nemo-llama2-7b.yaml"),
    ("dgx-h100", "runtime.step_overhead_us", "validation/nemo-llama2-7b.yaml"),
    ("dgx-h100", "runtime.token_overhead_us", "validation/nemo-llama2-7b.yaml"),
    ("sn40l", "runtime.token_overhead_us", "validation/sn40l-llama3.1.yaml"),
    ("dgx-a100", "nccl.bw_efficiency", "validation/nccl-tests.yaml"),
    ("dgx-h100", "nccl.bw_efficiency", "validation/nccl-tests.yaml"),
]


def test_every_calibrated_knob_is_listed() -> None:
    listed = {(p, k) for p, k, _ in SHIPPED}
    for platform in ("sn40l", "dgx-a100", "dgx-h100"):
        prof = load_profile(platform)
        calibrated = {path for path, src in prof.sources if src.startswith("calibrated")}
        assert calibrated == {k for p, k in listed if p == platform}


@pytest.mark.parametrize(("platform", "knob", "case_file"), SHIPPED)
def test_calibrate_reproduces_the_shipped_knob(platform: str, knob: str, case_file: str) -> None:
    src = load_profile(platform).source_of(knob)
    cases = [c for c in load_cases(REPO / case_file) if c.platform == platform and c.role == "calibration"]
    assert case_file in src and all(c.id in src for c in cases)
    shipped = current_value(platform, knob_spec(knob))
    pf, skipped = calibrate_platform(platform, cases, [knob], loo=False, x0=[shipped * 1.05], max_nfev=12)
    assert skipped == {}
    assert pf.x[0] == pytest.approx(shipped, rel=2e-3)
