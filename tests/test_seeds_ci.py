"""Sampled figures over seeds: the 95 % CI arithmetic, seed determinism, the columns, the plots' error bars.

The t quantiles are the public table values (two-sided 95 %): t(0.975, 1) = 12.7062047,
t(0.975, 4) = 2.7764451.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sn40l_emu.experiments.ci import aggregate, ci_key, mean_ci95, overlap, seed_list, t_quantile

TINY = {"model": "tiny-llama", "prompt_len": 4, "backend": "local"}


def test_t_quantiles_are_the_table_values() -> None:
    assert t_quantile(1) == pytest.approx(12.7062047, rel=1e-8)
    assert t_quantile(4) == pytest.approx(2.7764451, rel=1e-7)


def test_mean_and_ci_on_tiny_samples() -> None:
    # n = 2: s = sqrt(2), so the half-width is t(0.975, 1) * sqrt(2) / sqrt(2) = t(0.975, 1)
    mean, half = mean_ci95([10.0, 12.0])
    assert mean == 11.0 and half == pytest.approx(12.7062047, rel=1e-8)
    # n = 5: s^2 = 2.5 (ddof=1)
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-7)
    assert mean_ci95([7.0]) == (7.0, None)  # one draw: no interval, never 0
    assert mean_ci95([4.0, 4.0, 4.0])[1] == 0.0
    with pytest.raises(ValueError):
        mean_ci95([])


def test_aggregate_names_rounds_and_skips_missing() -> None:
    got = aggregate([{"total_ns": 10, "hit_rate": 0.5}, {"total_ns": 13, "hit_rate": 1.0, "x": None}],
                    ["total_ns", "hit_rate", "x"])
    assert got["total_ns"] == 12 and isinstance(got["total_ns"], int)  # 11.5 rounds to even ns: 12
    assert got["total_ci95_ns"] == pytest.approx(12.7062047 * 1.5, rel=1e-8)
    assert got["hit_rate"] == 0.75 and got["hit_rate_ci95"] == pytest.approx(12.7062047 * 0.25, rel=1e-8)
    assert got["x"] is None and got["x_ci95"] is None
    assert ci_key("p99_ns") == "p99_ci95_ns" and ci_key("nodes_needed") == "nodes_needed_ci95"
    assert seed_list(3, 4) == [3, 4, 5, 6]
    assert overlap(100, 10, 115, 5) and not overlap(100, 10, 116, 5) and not overlap(1, None, 1, None)


def _sweep(**kw: Any) -> list[dict[str, Any]]:
    from sn40l_emu.experiments.coe_sweep import SweepConfig, run_sweep

    cfg = SweepConfig(platforms=("sn40l", "dgx-a100"), experts=(3, 12), batch_sizes=(4,), tokens=(2,),
                      **TINY, **kw)  # type: ignore[arg-type]
    return run_sweep(cfg, progress=False)


@pytest.mark.slow  # runs sweeps
def test_coe_rows_are_means_over_seeds_with_their_interval() -> None:
    from sn40l_emu.experiments.coe_sweep import SAMPLED, output_rows, sample_rows

    def virtual(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]

    rows = _sweep(n_seeds=4, seed=2)
    assert virtual(rows) == virtual(_sweep(n_seeds=4, seed=2))  # same config and seeds, same nanoseconds
    for r in rows:
        assert r["seeds"] == 4 and [s["seed"] for s in r["samples"]] == [2, 3, 4, 5]
        totals = [s["total_ns"] for s in r["samples"]]
        mean, half = mean_ci95(totals)
        parts = ("router_ns", "switch_ns", "program_load_ns", "argument_load_ns", "host_ns", "expert_ns")
        assert abs(r["total_ns"] - mean) <= 0.5 * len(parts) and r["total_ci95_ns"] == pytest.approx(half)
        assert r["total_ns"] == sum(r[k] for k in parts)  # each part's mean rounded to whole ns
        assert r["hbm_misses"] == pytest.approx(sum(s["hbm_misses"] for s in r["samples"]) / 4)
        assert {ci_key(k) for k in SAMPLED if k != "load_ns"} <= set(r)
    assert any(r["switch_ci95_ns"] > 0 for r in rows)  # the draw matters somewhere: not a constant
    assert all("samples" not in r for r in output_rows(rows))
    assert len(sample_rows(rows)) == 4 * len(rows)
    # a one-seed run is the first seed's own draw, with no interval
    one = _sweep(n_seeds=1, seed=2)
    for r1, r in zip(one, rows, strict=True):
        assert r1["total_ns"] == r["samples"][0]["total_ns"] and r1["total_ci95_ns"] is None


def test_conclusion_says_when_a_difference_is_within_the_ci() -> None:
    from sn40l_emu.experiments.coe_conclusion import conclusion, headline_table

    def row(p: str, n: int, ms: float, ci_ms: float) -> dict[str, Any]:
        return {"platform": p, "experts": n, "batch": 8, "tokens": 20, "total_ns": int(ms * 1e6),
                "total_ci95_ns": ci_ms * 1e6, "switch_ns": 0, "oom": False, "experts_in_hbm_at_once": 49,
                "seeds": 5}

    rows = [row("sn40l", 100, 294, 15), row("sn40l", 150, 286, 12), row("dgx-a100", 100, 3905, 468),
            row("dgx-a100", 150, 3652, 370), row("dgx-h100", 100, 300, 10), row("dgx-h100", 150, 500, 10)]
    cfg = SimpleNamespace(model="m", prompt_len=128, workload="zipf:1.0", policy="lru", seed=0, n_seeds=5,
                          n_batches=1)
    text = conclusion(rows, cfg)
    assert "mean ± 95 % CI" in text and "seeds 0..4" in text
    a100 = next(line for line in text.splitlines() if line.strip().startswith("- dgx-a100: 3,905"))
    assert "within the 95 % CI" in a100
    h100 = next(line for line in text.splitlines() if line.strip().startswith("- dgx-h100: 300"))
    assert "beyond the 95 % CI" in h100
    assert "286 ± 12.0 ms" in text
    assert "± 95% CI" in headline_table(rows)


@pytest.mark.slow  # renders PNGs
def test_latency_and_footprint_plots_draw_error_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sn40l_emu.experiments import plots_coe
    from sn40l_emu.experiments.coe_fleet import plot_footprint

    containers: list[str] = []
    real = plots_coe._plt()
    orig = real.Figure.savefig

    def savefig(fig: Any, path: Any, **kw: Any) -> Any:
        containers.extend(type(c).__name__ for ax in fig.axes for c in ax.containers)
        return orig(fig, path, **kw)

    monkeypatch.setattr(real.Figure, "savefig", savefig)
    rows = _sweep(n_seeds=3)
    pngs = plots_coe.latency_vs_experts(rows, tmp_path)
    assert pngs and all(p.stat().st_size > 0 for p in pngs) and "ErrorbarContainer" in containers
    containers.clear()
    fp = [{"platform": "sn40l", "experts": e, "nodes_needed": 2.4, "nodes_needed_ci95": 0.5, "rate_per_s": 20.0,
           "p99_target_ns": 2_000_000_000, "seeds": 5} for e in (50, 100)]
    assert plot_footprint(fp, tmp_path / "fp.png", 64).stat().st_size > 0
    assert "ErrorbarContainer" in containers


@pytest.mark.slow  # measures a node's costs
def test_serving_figures_are_means_over_seeds() -> None:
    from sn40l_emu.experiments.coe_serve import run_serving

    # llama2-7b: a tiny model fits a million experts in HBM, and the cost probes would load them all
    kw: dict[str, Any] = {"backend": "local", "progress": False, "seed": 3}
    rows = run_serving("sn40l", "llama2-7b", 40, 4, 20.0, 24, ["lru"], n_seeds=3, **kw)
    one = run_serving("sn40l", "llama2-7b", 40, 4, 20.0, 24, ["lru"], **kw)[0]
    r = rows[0]
    assert r["seeds"] == 3 and one["seeds"] == 1 and "p99_ci95_ns" not in one
    assert one["p99_ns"] == r["samples"][0]["p99_ns"]
    for key in ("p99_ns", "ttft_p99_ns", "hit_rate", "goodput_per_s"):
        mean, half = mean_ci95([s[key] for s in r["samples"]])
        assert r[key] == pytest.approx(mean, abs=0.5) and r[ci_key(key)] == pytest.approx(half)


def test_experiment_file_seeds_are_single_draws() -> None:
    from sn40l_emu.experiments.run_file import parse_experiment, point_config, points

    ef = parse_experiment({"command": "coe", "options": dict(TINY), "seeds": [0, 1]})
    assert point_config(ef, points(ef)[0], 1).n_seeds == 1
    no_seeds = parse_experiment({"command": "coe", "options": dict(TINY)})
    assert point_config(no_seeds, points(no_seeds)[0], None).n_seeds == 5
    fixed = parse_experiment({"command": "coe", "options": {**TINY, "seeds": 3}, "seeds": [0]})
    assert point_config(fixed, points(fixed)[0], 0).n_seeds == 3


def test_validate_and_calibrate_options_come_from_their_declarations() -> None:
    import argparse

    from sn40l_emu.cli import build_parser
    from sn40l_emu.experiments.calibrate import CalibrateConfig
    from sn40l_emu.experiments.options import from_args, option_table
    from sn40l_emu.experiments.validate import ValidateConfig

    p = build_parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("coe", "coe-serve", "coe-fleet", "validate", "calibrate"):
        assert "--seeds" in subs[name].format_help() or name in ("validate", "calibrate")  # renders (no bare %)
    for cmd, cls in (("validate", ValidateConfig), ("calibrate", CalibrateConfig)):
        flags = {s for a in subs[cmd]._actions for s in a.option_strings}
        assert {o["option"] for o in option_table(cls)} <= flags
        assert {"--out", "--overwrite", "--json"} <= flags
    cfg = from_args(CalibrateConfig, p.parse_args(["calibrate", "--fit", "a.b,c.d", "--no-loo", "--platform", "x"]))
    assert cfg.knobs() == ["a.b", "c.d"] and cfg.loo is False and cfg.platform == "x" and cfg.max_nfev == 20
    assert from_args(ValidateConfig, p.parse_args(["validate", "--role", "validation"])).role == "validation"
