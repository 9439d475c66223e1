"""CLI options come from the config declarations: help and default everywhere, checked values, one line on error.

Also the run directories (nothing overwritten), `runs`, experiment files
(`sn40l-emu run`) and the Python API. Pure tier: everything on --backend local.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sn40l_emu.cli import build_parser, main
from sn40l_emu.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-llama", "--prompt-len", "4", "--backend", "local", "--no-progress"]


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Default run directories go to a temporary runs/; main()'s Ray environment defaults are undone."""
    saved = dict(os.environ)
    monkeypatch.setenv("SN40L_EMU_RUNS_DIR", str(tmp_path / "runs"))
    yield tmp_path / "runs"
    os.environ.clear()
    os.environ.update(saved)


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_every_option_of_every_command_has_help_and_a_default() -> None:
    missing = []
    for name, sub in _subparsers(build_parser()):
        for a in sub._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.help == argparse.SUPPRESS:
                continue
            if not a.help:
                missing.append(f"{name} {a.dest}: no help")
            elif a.option_strings and "default" not in a.help:
                missing.append(f"{name} {a.option_strings[-1]}: no default in {a.help!r}")
    assert missing == []


@pytest.mark.parametrize(("argv", "named"), [
    (["capacity", "--batch", "0"], "--batch"),
    (["capacity", "--tokens", "1e12"], "--tokens"),
    (["capacity", "--tokens", str(10**400)], "--tokens"),
    (["coe-serve", "--policies", "bogus"], "--policies"),
    (["coe-serve", "--rate", "inf"], "--rate"),
    (["up", "--sockets", "0"], "--sockets"),
    (["coe", "--experts", "0,10"], "--experts"),
    (["coe", "--backend", "cuda"], "--backend"),
    (["tp-scaling", "--mode", "fused"], "--mode"),
    (["allreduce-bench", "-e", "1e400"], "--maxbytes"),
    (["coe", "--json", "/proc/x.json"], "--json"),
    (["coe", "--json", "/dev/null/x.json"], "--json"),
    (["tp-scaling", "--out", "/dev/null/run"], "--out"),
    (["coe", "--platforms", "sn40l", "--profile", "dgx-a100"], "--profile"),
])
def test_bad_values_exit_2_with_one_line(argv: list[str], named: str, capsys: pytest.CaptureFixture[str],
                                         _runs_dir: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert not _runs_dir.exists()  # nothing was created before the check failed


def test_one_name_per_concept_old_spellings_still_work() -> None:
    from sn40l_emu.experiments.coe_serve import ServeConfig
    from sn40l_emu.experiments.coe_sweep import CapacityConfig, SweepConfig
    from sn40l_emu.experiments.options import from_args
    from sn40l_emu.experiments.tp_scaling import ScalingConfig

    p = build_parser()
    assert from_args(SweepConfig, p.parse_args(["coe", "--platforms", "sn40l,dgx-a100"])).platforms == (
        "sn40l", "dgx-a100")
    assert from_args(SweepConfig, p.parse_args(["coe", "--profile", "dgx-h100"])).platforms == ("dgx-h100",)
    assert from_args(CapacityConfig, p.parse_args(["capacity", "--platforms", "sn40l"])).platforms == ("sn40l",)
    assert from_args(ServeConfig, p.parse_args(["coe-serve", "--platform", "dgx-a100"])).profile == "dgx-a100"
    cfg = from_args(ScalingConfig, p.parse_args(["tp-scaling", "--platform", "dgx-h100", "--mode", "fused_so"]))
    assert cfg.profile == "dgx-h100" and cfg.modes == ("fused-so",) and cfg.backend == "ray"
    for cmd in ("coe", "capacity", "coe-serve", "tp-scaling", "allreduce-bench", "inject", "up"):
        helptext = next(s for n, s in _subparsers(p) if n == cmd).format_help()
        assert "--profile" in helptext and "--set" in helptext, cmd


def test_choices_come_from_the_enums() -> None:
    from sn40l_emu.cluster.session import Backend
    from sn40l_emu.coe.eviction import CachePolicy
    from sn40l_emu.experiments import coe_serve, coe_sweep
    from sn40l_emu.experiments.options import BACKENDS

    assert set(BACKENDS) == {b.value for b in Backend}
    assert set(coe_sweep.POLICY_NAMES) == set(coe_serve.POLICY_NAMES) == {p.value for p in CachePolicy}


def test_api_configs_are_checked_like_the_cli() -> None:
    from sn40l_emu.experiments.coe_sweep import SweepConfig

    with pytest.raises(ConfigError) as err:
        SweepConfig(batch_sizes=(0,))
    assert err.value.field == "batch_sizes"


def test_closed_pipe_ends_quietly() -> None:
    code = ("import os, sys\nr, w = os.pipe()\nos.close(r)\nos.dup2(w, 1)\n"
            "from sn40l_emu.cli import main\nsys.exit(main(['profile', 'list']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 141 and r.stderr == ""


def _coe(*extra: str) -> int:
    return main(["coe", "--profile", "sn40l", "--experts", "2", "--batch", "1", "--tokens", "2", *TINY, *extra])


@pytest.mark.slow
def test_two_coe_runs_leave_two_run_directories(_runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _coe() == 0 and _coe() == 0
    runs = sorted(d for d in _runs_dir.iterdir())
    assert len(runs) == 2 and all(d.name.startswith("coe-") for d in runs)
    for d in runs:
        assert {"run.json", "config.json", "results.json", "results.csv", "summary.md"} <= {p.name for p in d.iterdir()}
        assert json.loads((d / "run.json").read_text())["status"] == "done"
        assert len(pd.read_csv(d / "results.csv")) == 1
    assert json.loads((runs[0] / "config.json").read_text())["sweep"]["model"] == "tiny-llama"
    capsys.readouterr()
    assert main(["runs"]) == 0
    listed = capsys.readouterr().out
    assert all(d.name in listed for d in runs)


@pytest.mark.slow
def test_out_is_never_overwritten_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    assert _coe("--out", str(out), "--json", str(tmp_path / "copy.json")) == 0
    before = (out / "results.json").read_text()
    assert json.loads((tmp_path / "copy.json").read_text())["rows"][0]["experts"] == 2
    capsys.readouterr()
    assert _coe("--out", str(out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before
    assert _coe("--out", str(out), "--overwrite") == 0


@pytest.mark.slow
def test_oom_rows_leave_timings_blank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "oom"
    assert main(["coe", "--profile", "dgx-a100", "--experts", "1,50", "--batch", "1", "--tokens", "2", *TINY,
                 "--set", "host.dram_tib=0.00002", "--set", "socket.hbm_gib=0.00012", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df["oom"]) == [False, True]
    assert df.loc[df["oom"], ["router_ns", "switch_ns", "expert_ns", "total_ns"]].isna().all().all()
    assert df.loc[~df["oom"], "total_ns"].gt(0).all()
    text = capsys.readouterr().out
    assert "OOM" in text and "out of memory from 50 experts" in text


def test_experiment_file_one_row_per_grid_point(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert main(["run", str(ROOT / "experiments" / "capacity.yaml"), "--out", str(out), "--no-progress"]) == 0
    ef = yaml.safe_load((ROOT / "experiments" / "capacity.yaml").read_text())
    grid = ef["grid"]["product"]
    df = pd.read_csv(out / "results.csv")
    assert len(df) == len(grid["profile"]) * len(grid["experts"])
    assert list(df["grid.profile"]) == list(df["platform"])
    resolved = json.loads((out / "config.json").read_text())
    assert len(resolved["points"]) == len(df) and (out / "experiment.yaml").is_file()


@pytest.mark.slow
def test_experiment_file_zip_seeds_and_profile_knobs(tmp_path: Path) -> None:
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump({
        "command": "coe", "options": {"model": "tiny-llama", "prompt_len": 4, "backend": "local", "batch": 1,
                                      "tokens": 2, "profile": "sn40l"},
        "grid": {"zip": {"experts": [2, 3], "set.p2p.link_bw_gbps": [25, 50]}}, "seeds": [0, 1]}))
    out = tmp_path / "run"
    assert main(["run", str(f), "--out", str(out), "--no-progress"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and sorted(set(df["seed"])) == [0, 1] and list(df["experts"]) == [2, 2, 3, 3]
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 2 and {"total_ns.mean", "total_ns.ci95"} <= set(points.columns)
    cfgs = json.loads((out / "config.json").read_text())["points"]
    assert cfgs[2]["config"]["overrides"] == ["p2p.link_bw_gbps=50"]


@pytest.mark.parametrize(("doc", "field"), [
    ({"command": "nope"}, "command"),
    ({"command": "capacity", "grid": {"product": {"batch": [0]}}}, "batch"),
    ({"command": "capacity", "grid": {"zip": {"batch": [1], "tokens": [1, 2]}}}, "grid.zip"),
    ({"command": "capacity", "seeds": [0]}, "seed"),
    ({"command": "capacity", "typo": 1}, ".typo"),
])
def test_bad_experiment_files_exit_2(tmp_path: Path, doc: dict[str, object], field: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert main(["run", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err
    assert not (tmp_path / "o").exists()


def test_experiment_file_refuses_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text("a: &a [1, 1]\nb: &b [*a, *a]\ncommand: capacity\n")
    assert main(["run", str(f)]) == 2
    assert "aliases" in capsys.readouterr().err


def test_shipped_experiment_files_resolve() -> None:
    from sn40l_emu.experiments.run_file import load_experiment, point_config, points

    for f in sorted((ROOT / "experiments").glob("*.yaml")):
        ef = load_experiment(f)
        pts = points(ef)
        assert pts and all(point_config(ef, p, s) is not None for p in pts for s in (ef.seeds or (None,)))


def test_import_has_no_side_effects_and_api_matches_the_driver() -> None:
    code = ("import sys, sn40l_emu\nassert 'ray' not in sys.modules and 'sn40l_emu.api' not in sys.modules\n"
            "print(sorted(sn40l_emu.__all__))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr

    import sn40l_emu
    from sn40l_emu.experiments.coe_sweep import SweepConfig, run_sweep

    with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
        df = emu.run_coe(experts=[2, 3], batch=[1], tokens=[2], model="tiny-llama", prompt_len=4)
        with pytest.raises(ConfigError, match="event"):
            emu.schedule(object(), at="5ms")  # only typed events from sn40l_emu.events
        with pytest.raises(ConfigError):
            emu.run_coe(batch=0)
    rows = run_sweep(SweepConfig(platforms=("sn40l",), experts=(2, 3), batch_sizes=(1,), tokens=(2,),
                                 model="tiny-llama", prompt_len=4, backend="local"), progress=False)
    assert list(df["total_ns"]) == [r["total_ns"] for r in rows]
    assert df.attrs["config"]["batch_sizes"] == [1]


@pytest.mark.slow
def test_coe_points_share_one_sweep_with_the_same_nanoseconds() -> None:
    from sn40l_emu.experiments.registry import experiment
    from sn40l_emu.experiments.run_file import parse_experiment, point_config, points, run_experiment

    ef = parse_experiment({"command": "coe", "options": {"model": "tiny-llama", "prompt_len": 4, "backend": "local",
                                                         "tokens": 2},
                           "grid": {"product": {"profile": ["sn40l", "dgx-a100"], "experts": [2, 60],
                                                "batch": [1, 2]}}})
    rows, _ = run_experiment(ef)
    assert len(rows) == 8 and [r["point"] for r in rows] == list(range(8))
    alone = [experiment("coe").run(point_config(ef, p, None))[0] for p in points(ef)]
    key = ("platform", "experts", "batch", "tokens", "total_ns", "switch_ns", "hbm_misses", "oom")
    assert [tuple(r[k] for k in key) for r in rows] == [tuple(r[k] for k in key) for r in alone]
