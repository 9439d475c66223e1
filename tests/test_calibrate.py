"""`sn40l-emu calibrate`: it recovers knob values from cases the emulator itself generated at them.

The synthetic cases are the emulator's own answers at known knob values
(tiny model, so each run is cheap); a fit that starts from the shipped values
must come back to the known ones. Nothing here needs Ray.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sn40l_emu.config import load_profile
from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.calibrate import calibrate_platform, knob_spec, profile_yaml, yaml_number
from sn40l_emu.experiments.cases import Case, Target, predict
from sn40l_emu.experiments.validate import run_validate

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

TRUE_KERNEL_US = 9.0
TRUE_LL_LAT_US = 9.0  # nccl.ring_base_lat_ll_us: tiny all-reduces on DGX run NCCL ring LL


def _case(cid: str, tp: int, batch: int, platform: str = "dgx-h100", value: float = 1.0) -> Case:
    return Case(id=cid, source="synthetic: the emulator at known knob values", role="calibration",
                platform=platform, tp=tp, phase="generate", metric="e2e_latency", value=value, unit="us",
                file="synthetic.yaml", model="tiny-llama", batch=batch, prompt_len=16, output_tokens=4)


def _synthetic(platform: str = "dgx-h100", *, both: bool = False) -> list[Case]:
    """Cases at the true kernel launch (and, with ``both``, the true NCCL ring LL base latency)."""
    truth = Target(platform, (f"launch.gpu_kernel_us={TRUE_KERNEL_US}",
                              *([f"nccl.ring_base_lat_ll_us={TRUE_LL_LAT_US}"] if both else [])))
    out = []
    for tp, batch in ((1, 1), (2, 1), (4, 2)):
        probe = _case(f"syn-{platform}-tp{tp}-bs{batch}", tp, batch, platform)
        out.append(_case(probe.id, tp, batch, platform, value=predict(probe, truth)))
    return out


@pytest.mark.parametrize("v", [1e-10, 0.0, 4.0, 6.863, 0.7, 12345678.9])
def test_override_numbers_read_back_as_numbers(v: float) -> None:
    assert yaml.safe_load(yaml_number(v)) == pytest.approx(v, rel=1e-12, abs=0)


def test_knob_spec_bounds_and_errors() -> None:
    k = knob_spec("launch.gpu_kernel_us")
    assert (k.lower, k.upper) == (0.0, float("inf"))
    assert k.quantum == pytest.approx(1e-3)  # one ns in us
    assert k.snap(0.0004) == 0.0 and k.snap(6.8634) == pytest.approx(6.863)
    assert load_profile("dgx-h100", [f"launch.gpu_kernel_us={yaml_number(k.snap(1e-10))}"]).launch.gpu_kernel_ns == 0
    assert knob_spec("tile.compute_efficiency").upper == 1.0
    for bad in ("nosuch.field", "launch.nosuch", "p2p.topology", "node.sockets"):
        with pytest.raises(ConfigError):
            knob_spec(bad)


def test_calibrate_recovers_known_knob_values() -> None:
    cases = _synthetic(both=True)
    shipped = load_profile("dgx-h100")
    start = [shipped.launch.gpu_kernel_ns / 1e3, shipped.nccl.ring_base_lat_ll_ns / 1e3]
    assert start != [TRUE_KERNEL_US, TRUE_LL_LAT_US]  # the fit has somewhere to go
    pf, skipped = calibrate_platform("dgx-h100", cases, ["launch.gpu_kernel_us", "nccl.ring_base_lat_ll_us"],
                                     loo=False)
    assert skipped == {}
    assert pf.x0 == start
    assert pf.x[0] == pytest.approx(TRUE_KERNEL_US, rel=2e-3)
    assert pf.x[1] == pytest.approx(TRUE_LL_LAT_US, rel=2e-3)
    assert max(abs(e) for e in pf.rel_errs.values()) < 1e-3


def test_cases_of_one_platform_only_inform_its_profile() -> None:
    """An absurd case of another platform is not part of this platform's fit."""
    cases = [*_synthetic(), _case("other-platform", 1, 1, platform="dgx-a100", value=1e9)]
    pf, _ = calibrate_platform("dgx-h100", cases, ["launch.gpu_kernel_us"], loo=False)
    assert "other-platform" not in {c.id for c in pf.cases}
    assert pf.x[0] == pytest.approx(TRUE_KERNEL_US, rel=2e-3)


def test_leave_one_out_and_written_profile(tmp_path: Path) -> None:
    cases = _synthetic()
    pf, _ = calibrate_platform("dgx-h100", cases, ["launch.gpu_kernel_us"], x0=[TRUE_KERNEL_US])
    assert set(pf.loo_rel_errs) == {c.id for c in cases}
    path = tmp_path / "dgx-h100.yaml"
    path.write_text(profile_yaml(pf))
    prof = load_profile(str(path))
    assert prof.launch.gpu_kernel_ns == round(pf.x[0] * 1e3)
    src = prof.source_of("launch.gpu_kernel_us")
    assert "calibrated" in src and all(c.id in src for c in cases) and "synthetic.yaml" in src
    assert "launch.gpu_kernel_us" in prof.knobs
    # validate with that profile reports every fitted case as calibration, even one filed as validation
    val_cases = [Case(**{**c.__dict__, "role": "validation"}) for c in cases[:1]]
    result = run_validate(val_cases, profile_dir=str(tmp_path))
    assert result["summary"]["validation"]["count"] == 0
    assert result["cases"][0]["role"] == "calibration"


def test_cli_calibrate_writes_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sn40l_emu.cli import main

    cases = _synthetic()
    f = tmp_path / "syn.yaml"
    f.write_text(yaml.safe_dump({"cases": [
        {"id": c.id, "source": c.source, "role": "calibration", "platform": c.platform, "model": c.model,
         "tp": c.tp, "batch": c.batch, "prompt_len": c.prompt_len, "output_tokens": c.output_tokens,
         "phase": c.phase, "metric": c.metric, "value": c.value, "unit": c.unit} for c in cases]}))
    out = tmp_path / "cal.yaml"
    run = tmp_path / "run"
    code = main(["calibrate", "--fit", "launch.gpu_kernel_us", "--cases", str(f), "--out", str(run),
                 "--profile-out", str(out), "--no-loo", "--json", str(tmp_path / "cal.json")])
    assert code == 0
    assert "launch.gpu_kernel_us" in capsys.readouterr().out
    assert load_profile(str(out)).launch.gpu_kernel_ns == pytest.approx(TRUE_KERNEL_US * 1e3, rel=2e-2)
    assert (run / "dgx-h100.yaml").read_text() == out.read_text()
    assert {"results.json", "results.csv", "config.json", "summary.md"} <= {p.name for p in run.iterdir()}
    # a run directory is never written into twice without --overwrite; a bad knob creates nothing
    assert main(["calibrate", "--fit", "launch.gpu_kernel_us", "--cases", str(f), "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    for argv, named in ((["--fit", "p2p.topology"], "--fit"), (["--fit", "launch.gpu_kernel_us", "--max-nfev", "0"],
                                                              "--max-nfev"),
                        (["--fit", "launch.gpu_kernel_us", "--out", str(tmp_path / "old.yaml")], "--out")):
        assert main(["calibrate", "--cases", str(f), "--out", str(tmp_path / "bad"), *argv]
                    if "--out" not in argv else ["calibrate", "--cases", str(f), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err
        assert not (tmp_path / "bad").exists()
