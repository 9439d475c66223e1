"""`sn40l-emu validate`: the shipped case files, the case schema, the JSON and summary shape, and roles.

Small cases on the tiny model keep this file fast; nothing here needs Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.cases import ROLES, Case, Target, case_from, load_cases, predict, summarize
from sn40l_emu.experiments.validate import fitted_case_ids, run_validate

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "validation"


def _tiny(cid: str, role: str, tp: int, value: float, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": cid, "source": "synthetic (test)", "role": role, "platform": "dgx-h100", "model": "tiny-llama",
        "tp": tp, "batch": 1, "prompt_len": 16, "output_tokens": 4, "phase": "generate",
        "metric": "e2e_latency", "value": value, "unit": "us",
    }
    base.update(kw)
    return base


def _write(tmp_path: Path, cases: list[dict[str, object]], name: str = "cases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"cases": cases}))
    return path


# ---- the shipped files ----------------------------------------------------------------------
def test_shipped_cases_load_with_unique_ids_and_sources() -> None:
    cases = load_cases(SHIPPED)
    assert len({c.id for c in cases}) == len(cases)
    assert all(c.role in ROLES and c.source for c in cases)
    assert {c.role for c in cases} == set(ROLES)


def test_shipped_calibration_set_is_the_published_one() -> None:
    """The calibration figures as published (NeMo table, nccl-tests issues 212/149, SN40L Table IV)."""
    got = {(c.platform, c.metric, c.tp, c.batch, c.algo if c.metric == "busbw" else ""): (c.value, c.unit)
           for c in load_cases(SHIPPED) if c.role == "calibration"}
    want = {
        ("dgx-a100", "e2e_latency", 8, 1, ""): (136.5, "ms"), ("dgx-a100", "e2e_latency", 8, 8, ""): (181.9, "ms"),
        ("dgx-a100", "e2e_latency", 1, 1, ""): (234.0, "ms"), ("dgx-h100", "e2e_latency", 8, 1, ""): (97.6, "ms"),
        ("dgx-h100", "e2e_latency", 8, 8, ""): (129.1, "ms"), ("dgx-h100", "e2e_latency", 1, 1, ""): (153.8, "ms"),
        ("dgx-h100", "busbw", 8, 1, "ring"): (370.0, "GB/s"), ("dgx-h100", "busbw", 8, 1, "nvls"): (480.0, "GB/s"),
        ("dgx-a100", "busbw", 8, 1, "ring"): (200.0, "GB/s"),
        ("sn40l", "tokens_per_s_per_user", 16, 1, ""): (1042.0, "tok/s"),
    }
    assert got == want


# ---- the schema -------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"role": "both"}, "role"),
    ({"metric": "speed"}, "metric"),
    ({"phase": "decode"}, "phase"),
    ({"unit": "GB/s"}, "unit"),
    ({"value": -3}, "value"),
    ({"tp": 0}, "tp"),
    ({"colour": "red"}, "colour"),
])
def test_bad_case_names_the_field(change: dict[str, object], field: str) -> None:
    raw = {**_tiny("c1", "validation", 1, 10.0), **change}
    with pytest.raises(ConfigError) as exc:
        case_from(raw, "f.yaml")
    assert exc.value.field.endswith(field)


def test_missing_source_and_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    raw = _tiny("c1", "validation", 1, 10.0)
    del raw["source"]
    with pytest.raises(ConfigError, match="source"):
        case_from(raw, "f.yaml")
    _write(tmp_path, [_tiny("dup", "validation", 1, 10.0)], "a.yaml")
    _write(tmp_path, [_tiny("dup", "calibration", 2, 10.0)], "b.yaml")
    with pytest.raises(ConfigError, match="dup"):
        load_cases(tmp_path)


def test_summarize_counts_and_median() -> None:
    s = summarize([0.05, -0.2, 0.3, -0.08])
    assert s == {"count": 4, "median_abs_rel_err": pytest.approx(0.14), "worst_abs_rel_err": pytest.approx(0.3),
                 "within_10pct": 2, "within_25pct": 3}
    assert summarize([])["count"] == 0


# ---- running cases -------------------------------------------------------------------------
def test_validate_json_and_summary_structure(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        _tiny("cal-tp1", "calibration", 1, 800.0),
        _tiny("val-tp2", "validation", 2, 1500.0),
        _tiny("val-tp2-ttft", "validation", 2, 0.5, phase="prefill", metric="ttft", unit="ms",
              output_tokens=None),
        {"id": "val-busbw", "source": "synthetic", "role": "validation", "platform": "dgx-h100", "tp": 4,
         "phase": "collective", "metric": "busbw", "algo": "ring", "size_bytes": 1 << 20, "value": 50.0,
         "unit": "GB/s"},
        {"id": "val-unknown-algo", "source": "synthetic", "role": "validation", "platform": "dgx-h100", "tp": 4,
         "phase": "collective", "metric": "busbw", "algo": "no-such-algo", "size_bytes": 1 << 20, "value": 50.0,
         "unit": "GB/s"},
    ])
    result = run_validate(load_cases(path))
    rows = {r["id"]: r for r in result["cases"]}
    assert set(rows) == {"cal-tp1", "val-tp2", "val-tp2-ttft", "val-busbw", "val-unknown-algo"}
    for r in result["cases"]:
        assert {"id", "source", "role", "got", "want", "rel_err"} <= set(r)
    for cid in ("cal-tp1", "val-tp2", "val-tp2-ttft", "val-busbw"):
        r = rows[cid]
        assert r["got"] > 0
        assert r["rel_err"] == pytest.approx(r["got"] / r["want"] - 1)
    assert rows["val-unknown-algo"]["got"] is None and "algo" in rows["val-unknown-algo"]["skipped"]
    cal, val = result["summary"]["calibration"], result["summary"]["validation"]
    assert cal["count"] == 1 and cal["skipped"] == 0
    assert val["count"] == 3 and val["skipped"] == 1
    errs = sorted(abs(rows[c]["rel_err"]) for c in ("val-tp2", "val-tp2-ttft", "val-busbw"))
    assert val["median_abs_rel_err"] == pytest.approx(errs[1])
    assert val["worst_abs_rel_err"] == pytest.approx(errs[2])
    assert val["within_25pct"] == sum(e <= 0.25 for e in errs)


def test_each_metric_is_its_run_path() -> None:
    """tokens/s/user is 1 / a decode step; output tok/s is N / the generate row; ttft the prefill row."""
    from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling

    cfg = ScalingConfig(model="tiny-llama", tps=(2,), phases=("prefill", "decode"), modes=("unfused",),
                        profile="dgx-h100", prompt_len=16, context_len=16, tokens=4)
    rows = {r["phase"]: r["latency_ns"] for r in run_scaling(cfg)}
    common = {"id": "m", "source": "s", "role": "validation", "platform": "dgx-h100", "tp": 2, "value": 1.0,
              "model": "tiny-llama", "batch": 1, "prompt_len": 16}
    t = Target("dgx-h100")
    assert predict(Case(**common, phase="decode", metric="tokens_per_s_per_user", unit="tok/s"), t) == \
        pytest.approx(1e9 / rows["decode"])
    assert predict(Case(**common, phase="generate", metric="output_tokens_per_s", unit="tok/s", output_tokens=4),
                   t) == pytest.approx(4e9 / rows["generate"])
    assert predict(Case(**common, phase="prefill", metric="ttft", unit="us"), t) == \
        pytest.approx(rows["prefill"] / 1e3)


def test_a_case_a_knob_was_fitted_to_is_never_a_validation(tmp_path: Path) -> None:
    """A validation-role case named in a calibrated source of its platform's profile is reported as calibration."""
    path = _write(tmp_path, [_tiny("val-a", "validation", 1, 800.0), _tiny("val-b", "validation", 2, 1500.0)])
    cases = load_cases(path)
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "dgx-h100.yaml").write_text(yaml.safe_dump({
        "extends": "dgx-h100",
        "launch": {"gpu_kernel_us": {"value": 4, "knob": True,
                                     "source": f"calibrated (test) on {path} cases val-a; residuals: val-a +0.0%"}},
    }))
    assert fitted_case_ids(cases, str(prof)) == {"val-a": str(prof / "dgx-h100.yaml")}
    result = run_validate(cases, profile_dir=str(prof))
    roles = {r["id"]: r["role"] for r in result["cases"]}
    assert roles == {"val-a": "calibration", "val-b": "validation"}
    assert result["summary"]["validation"]["count"] == 1
    assert result["summary"]["calibration"]["count"] == 1


def test_calibration_cases_stay_out_of_the_validation_summary(tmp_path: Path) -> None:
    path = _write(tmp_path, [_tiny("c-1", "calibration", 1, 10.0), _tiny("c-2", "calibration", 2, 10.0)])
    result = run_validate(load_cases(path))
    assert result["summary"]["validation"]["count"] == 0
    assert result["summary"]["calibration"]["count"] == 2


def test_cli_writes_json_and_parity_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sn40l_emu.cli import main

    path = _write(tmp_path, [_tiny("cal-tp1", "calibration", 1, 800.0), _tiny("val-tp2", "validation", 2, 1500.0)])
    out = tmp_path / "out"
    code = main(["validate", "--cases", str(path), "--backend", "local", "--json", str(tmp_path / "v.json"),
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "calibration" in text and "validation" in text and "median" in text
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"cases", "summary"}
    assert set(data["summary"]) == {"calibration", "validation"}
    assert json.loads((tmp_path / "v.json").read_text()) == data  # --json: a copy
    assert {"run.json", "config.json", "results.csv", "summary.md"} <= {p.name for p in out.iterdir()}
    png = out / "validate_parity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_into_its_run_directory_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing lands in the working directory; --out is refused when full, accepted with --overwrite."""
    from sn40l_emu.cli import main

    path = _write(tmp_path, [_tiny("cal-tp1", "calibration", 1, 800.0)])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "v1"
    assert main(["validate", "--cases", str(path), "--out", str(out), "--role", "calibration"]) == 0
    assert list(cwd.iterdir()) == [] and (out / "results.json").is_file()
    assert main(["validate", "--cases", str(path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["validate", "--cases", str(path), "--out", str(out), "--overwrite"]) == 0
    assert main(["validate", "--cases", str(path), "--role", "nope", "--out", str(tmp_path / "v2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--role" in err and not (tmp_path / "v2").exists()


def test_cli_bad_case_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sn40l_emu.cli import main

    path = _write(tmp_path, [_tiny("c", "neither", 1, 10.0)])
    assert main(["validate", "--cases", str(path), "--json", str(tmp_path / "v.json"), "--out", str(tmp_path)]) == 2
    assert "role" in capsys.readouterr().err


# ---- serving settings a case carries (set:, assumed:) ------------------------------------------
def _spec(cid: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": cid, "source": "synthetic (test)", "role": "validation", "platform": "sn40l", "model": "tiny-llama",
        "tp": 2, "batch": 1, "prompt_len": 128, "phase": "speculative", "metric": "tokens_per_s_per_user",
        "value": 1000.0, "unit": "tok/s",
        "set": ["runtime.spec_draft_model=tiny-gqa", "runtime.spec_draft_len=3", "runtime.spec_acceptance=0.5"],
        "assumed": ["runtime.spec_acceptance"],
    }
    base.update(kw)
    return base


def test_a_speculative_case_runs_through_validate_with_its_settings(tmp_path: Path) -> None:
    from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
    from sn40l_emu.experiments.validate import table_text

    path = _write(tmp_path, [_spec("spec-tiny"), _spec("plain-tiny", phase="decode", set=[], assumed=[])])
    result = run_validate(load_cases(path))
    rows = {r["id"]: r for r in result["cases"]}
    spec, plain = rows["spec-tiny"], rows["plain-tiny"]
    want = run_scaling(ScalingConfig(model="tiny-llama", tps=(2,), phases=("speculative",), modes=("fused-ho",),
                                     overrides=tuple(_spec("x")["set"]), prompt_len=128, context_len=128))[0]
    assert spec["got"] == want["tokens_per_s_per_user"]
    assert spec["rel_err"] == spec["got"] / 1000.0 - 1.0
    assert (spec["phase"], spec["set"], spec["assumed"]) == ("speculative", _spec("x")["set"],
                                                             ["runtime.spec_acceptance"])
    assert (plain["phase"], plain["set"], plain["assumed"]) == ("decode", [], [])
    assert spec["got"] != plain["got"]
    text = table_text(result)
    assert ("spec-tiny runs speculative with runtime.spec_draft_model=tiny-gqa, runtime.spec_draft_len=3, "
            "runtime.spec_acceptance=0.5 (assumed)") in text
    assert "plain-tiny runs" not in text


@pytest.mark.parametrize(("change", "field"), [
    ({"set": ["runtime.spec_draft_len=3"]}, ".set"),  # speculative without a draft model
    ({"set": ["runtime.spec_draft_model=no-such-model"]}, ".set"),
    ({"set": ["runtime.spec_draft_model=tiny-gqa", "runtime.spec_acceptance=1.5"]}, "set.runtime.spec_acceptance"),
    ({"set": ["runtime.spec_draft_model=tiny-gqa", "runtime.no_such_knob=1"]}, "set.runtime"),
    ({"set": ["nosection.x=1"]}, "set.nosection.x"),
    ({"assumed": ["runtime.sample_us"]}, ".assumed"),  # a profile field the case does not set
    ({"assumed": ["colour"]}, ".assumed"),
])
def test_bad_settings_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        case_from(_spec("bad", **change), "f.yaml")
    assert field in exc.value.field


def test_shipped_sn40l_70b_405b_cases_run_speculative_with_their_settings_marked_assumed() -> None:
    """SN40L paper Table IV: these two were served with speculative decoding; its settings are not public."""
    cases = {c.id: c for c in load_cases(SHIPPED / "sn40l-llama3.1.yaml")}
    for cid in ("sn40l-llama3.1-70b-16s-tps", "sn40l-llama3.1-405b-16s-tps"):
        c = cases[cid]
        assert c.phase == "speculative" and c.role == "validation"
        knobs = {s.partition("=")[0] for s in c.settings}
        assert knobs == {"runtime.spec_draft_model", "runtime.spec_draft_len", "runtime.spec_acceptance"}
        assert knobs <= set(c.assumed)
    assert cases["sn40l-llama3.1-8b-16s-tps"].phase == "decode"
