"""TP scaling in timing mode: layer and step cost reuse are exact, the llama2-7b claims, the CLI.

Everything runs on :class:`LocalNode` (in-process sockets, same nanoseconds
as the Ray actors; ``test_tp_functional.py`` checks one row on Ray).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sn40l_emu.cli import main
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.engine.layer_reuse import LayerPrograms, canonical_program, layer_of
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.experiments.rows import ROW_BREAKDOWN_KEYS
from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
from sn40l_emu.program import Program, Tier
from sn40l_emu.workload import ExecMode, Step, build_program, load_model, make_plan, shipped_models
from sn40l_emu.workload.memory_plan import fit_in_hbm
from sn40l_emu.workload.placement import Placement

# full-size models through the node and the CLI: the slow tier (make test, not make test-fast)
pytestmark = pytest.mark.slow

SN40L = load_profile("sn40l")
LLAMA2 = load_model("llama2-7b")
ROW_KEYS = {"platform", "model", "tp", "phase", "mode", "batch", "prompt_len", "context_len", "latency_ns",
            "tokens_per_s_per_user", "breakdown_ns", "hbm_bw_utilization"}


def _same(a: dict[int, Any], b: dict[int, Any]) -> None:
    assert a.keys() == b.keys()
    for s in a:
        assert (a[s].start_ns, a[s].end_ns, a[s].breakdown_ns) == (b[s].start_ns, b[s].end_ns, b[s].breakdown_ns)


# ---- programs built from one layer are the full programs ------------------------------------
@pytest.mark.parametrize("name", shipped_models())
def test_one_layer_template_is_the_full_program(name: str) -> None:
    model = load_model(name)
    plan = make_plan(model, 8)
    programs = LayerPrograms(ProgramBook())
    modes = [ExecMode.FUSED_HO, ExecMode.GPU] if model.num_hidden_layers > 80 else list(ExecMode)
    for mode in modes:
        for step in (Step.decode(2, 100), Step.prefill(2, 64)):
            got = programs.group(model, plan, step, mode)
            for rank in (0, 5):
                want = canonical_program(build_program(model, plan, step, mode, rank))
                assert got[plan.group[rank]] == want, (mode, step, rank)


def test_spilled_layers_stream_from_the_spill_tier() -> None:
    plan = make_plan(LLAMA2, 4)
    step, mode, ddr = Step.decode(1, 50), ExecMode.FUSED_SO, Placement(weights=Tier.DDR)
    got = LayerPrograms(ProgramBook()).group(LLAMA2, plan, step, mode, hbm_layers=20, spill=ddr)[0]
    hbm = build_program(LLAMA2, plan, step, mode, 0).ops
    spilled = build_program(LLAMA2, plan, step, mode, 0, placement=ddr).ops
    want = tuple(b if (layer_of(a) is not None and int(layer_of(a) or 0) >= 20) else a
                 for a, b in zip(hbm, spilled, strict=True))
    assert got == canonical_program(Program(got.label, want))


# ---- layer reuse and step reuse give the nanoseconds of running everything --------------------
@pytest.mark.parametrize(("tp", "mode", "step"), [
    (4, ExecMode.UNFUSED, Step.decode(1, 128)),
    (8, ExecMode.FUSED_HO, Step.decode(1, 128)),
    (4, ExecMode.FUSED_SO, Step.prefill(2, 128)),
])
def test_layer_reuse_gives_the_plain_nodes_ns(tp: int, mode: ExecMode, step: Step) -> None:
    programs = ProgramBook().group(LLAMA2, make_plan(LLAMA2, tp), step, mode)
    plain_node, layered_node = LocalNode(SN40L, trace=False), LocalNode(SN40L, trace=False)
    plain = plain_node.run_programs(programs)
    layered = CostReuse(layered_node, steps=False)
    _same(plain, layered.run(programs))
    assert layered.layer_stats.real_runs <= 4 and layered.layer_stats.reused_runs >= 28
    assert layered_node.clocks() == plain_node.clocks()  # the node owns the clocks, reused or not


@pytest.mark.parametrize("profile", ["sn40l", "dgx-h100"])
def test_layer_reuse_over_two_nodes_and_on_a_16_socket_node(profile: str) -> None:
    """TP16 crosses the scale-out link; TP8 on a 16-socket node equals TP8 on an 8-socket node."""
    prof = load_profile(profile)
    mode = ExecMode.GPU if profile != "sn40l" else ExecMode.FUSED_HO
    short = dataclasses.replace(LLAMA2, num_hidden_layers=2)  # keeps the plain TP16 run short
    book = ProgramBook()
    p16 = book.group(short, make_plan(short, 16), Step.decode(1, 64), mode)
    _same(LocalNode(prof, 16, trace=False).run_programs(p16),
          CostReuse(LocalNode(prof, 16, trace=False), steps=False).run(p16))
    p8 = book.group(LLAMA2, make_plan(LLAMA2, 8), Step.decode(1, 64), mode)
    _same(CostReuse(LocalNode(prof, 8, trace=False), steps=False).run(p8),
          CostReuse(LocalNode(prof, 16, trace=False), steps=False).run(p8))


def test_step_reuse_gives_the_ns_of_running_every_step() -> None:
    """30 decode steps of llama2-7b TP8: CostReuse on vs off, step by step, every socket."""
    plan = make_plan(LLAMA2, 8)
    programs = LayerPrograms(ProgramBook())
    steps = [Step.decode(1, 128 + i) for i in range(30)]
    on = CostReuse(LocalNode(SN40L, trace=False))
    off = CostReuse(LocalNode(SN40L, trace=False), steps=False)  # layer reuse only: every step runs
    for step in steps:
        group = programs.group(LLAMA2, plan, step, ExecMode.FUSED_HO)
        _same(on.run(group), off.run(group))
    assert on.stats.real_runs == 1 and on.stats.reused_runs == 29 and off.stats.real_runs == 30
    assert on.node.clocks() == off.node.clocks()


def test_step_reuse_on_a_plain_node() -> None:
    """The same without layer reuse underneath, on a one-layer llama2-7b (every step fully real)."""
    short = dataclasses.replace(LLAMA2, num_hidden_layers=1)
    plan = make_plan(short, 4)
    book = ProgramBook()
    on = CostReuse(LocalNode(SN40L, trace=False), layers=False)
    off = CostReuse(LocalNode(SN40L, trace=False), enabled=False)
    for i in range(12):
        group = book.group(short, plan, Step.decode(2, 300 + i), ExecMode.UNFUSED)
        _same(on.run(group), off.run(group))
    assert on.stats.reused_runs == 11


# ---- the llama2-7b decode claims ---------------------------------------------------------------
@pytest.fixture(scope="module")
def llama2_decode_rows() -> list[dict[str, Any]]:
    return run_scaling(ScalingConfig(tps=(1, 2, 4, 8, 16), phases=("decode",)))


def test_llama2_decode_breakdown_adds_up_and_modes_order(llama2_decode_rows: list[dict[str, Any]]) -> None:
    rows = llama2_decode_rows
    assert len(rows) == 15
    lat = {(r["tp"], r["mode"]): r["latency_ns"] for r in rows}
    for r in rows:
        assert r.keys() >= ROW_KEYS
        assert tuple(r["breakdown_ns"]) == ROW_BREAKDOWN_KEYS
        assert sum(r["breakdown_ns"].values()) == r["latency_ns"] > 0
        assert 0.0 < r["hbm_bw_utilization"] <= SN40L.tile.hbm_stream_efficiency
        assert r["tokens_per_s_per_user"] == pytest.approx(1e9 / r["latency_ns"])
        assert (r["platform"], r["phase"], r["batch"], r["context_len"], r["spilled_layers"]) == (
            "sn40l", "decode", 1, 128, 0)
    for tp in (1, 2, 4, 8, 16):
        assert lat[(tp, "fused-ho")] <= lat[(tp, "fused-so")] <= lat[(tp, "unfused")]
    for mode in ("unfused", "fused-so", "fused-ho"):
        assert lat[(8, mode)] < lat[(1, mode)]
    by = {(r["tp"], r["mode"]): r for r in rows}
    assert by[(1, "fused-ho")]["breakdown_ns"]["weights"] > 0.95 * lat[(1, "fused-ho")]  # weight streaming
    assert by[(8, "unfused")]["breakdown_ns"]["launch"] > 0.5 * lat[(8, "unfused")]  # host launches
    assert by[(1, "fused-ho")]["breakdown_ns"]["collectives"] == 0 < by[(8, "fused-ho")]["breakdown_ns"]["collectives"]


def test_generate_is_prefill_plus_reused_decode_steps() -> None:
    cfg = ScalingConfig(tps=(8,), phases=("prefill",), modes=("fused-ho",), tokens=6)
    prefill, gen = run_scaling(cfg)
    assert (prefill["phase"], gen["phase"], gen["context_len"]) == ("prefill", "generate", 128 + 5)
    decodes = run_scaling(dataclasses.replace(cfg, phases=("decode",), tokens=0, context_len=128))
    assert gen["latency_ns"] > prefill["latency_ns"] + 5 * decodes[0]["latency_ns"]
    assert gen["tokens_per_s_per_user"] == pytest.approx(6e9 / gen["latency_ns"])
    assert sum(gen["breakdown_ns"].values()) == gen["latency_ns"]


def test_models_that_do_not_fit_spill_whole_layers() -> None:
    from sn40l_emu.workload import memory_plan

    model = load_model("llama3.1-70b")
    plan = make_plan(model, 1)
    fit = fit_in_hbm(SN40L, plan, 1, 256, 128)
    assert 0 < fit.hbm_layers < model.num_hidden_layers and fit.spill_tier is Tier.DDR
    used = sum(a.size_bytes for a in memory_plan(model, plan, 1, 256, max_prefill_len=128)[0])
    spilled = fit.spilled_layers * plan.layer_weight_bytes_per_socket
    assert used - spilled <= SN40L.socket.hbm_bytes < used - spilled + plan.layer_weight_bytes_per_socket
    assert fit_in_hbm(SN40L, make_plan(model, 8), 1, 256, 128).spilled_layers == 0
    assert fit_in_hbm(load_profile("dgx-h100"), make_plan(model, 1), 1, 256, 128).spill_tier is Tier.HOST


# ---- the command ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _keep_environ() -> Iterator[None]:
    """``main()`` sets Ray's environment defaults in this process: undo them after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _cli(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "out"
    code = main(["tp-scaling", *args, "--backend", "local", "--no-progress", "--json", str(out / "tp.json"),
                 "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "tp.json").read_text())
    config = json.loads((out / "tp.config.json").read_text())
    assert config["args"]["backend"] == "local" and config["profile"]["name"] == doc["rows"][0]["platform"]
    pngs = list(out.glob("tp_scaling_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    for r in doc["rows"]:
        assert r.keys() >= ROW_KEYS and sum(r["breakdown_ns"].values()) == r["latency_ns"]
    return list(doc["rows"])


def test_cli_sn40l_tp16_with_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _cli(tmp_path, "--model", "llama2-7b", "--tp", "8,16", "--phase", "decode",
                "--mode", "fused-ho,fused-so", "--tokens", "3")
    assert [(r["tp"], r["phase"], r["mode"]) for r in rows][:3] == [
        (8, "decode", "fused-ho"), (8, "decode", "fused-so"), (8, "generate", "fused-ho")]
    assert len(rows) == 8 and {r["phase"] for r in rows} == {"decode", "generate"}
    out = capsys.readouterr().out
    assert "latency us" in out and "generate" in out


@pytest.mark.parametrize("platform", ["dgx-a100", "dgx-h100"])
def test_cli_on_gpu_platforms_runs_gpu_mode(tmp_path: Path, platform: str) -> None:
    rows = _cli(tmp_path, "--platform", platform, "--tp", "1,8,16", "--phase", "decode", "--tokens", "2")
    assert {r["mode"] for r in rows} == {"gpu"} and {r["platform"] for r in rows} == {platform}
    assert len(rows) == 6
    lat = {(r["tp"], r["phase"]): r["latency_ns"] for r in rows}
    assert lat[(8, "decode")] < lat[(1, "decode")]


@pytest.mark.parametrize("name", [m for m in shipped_models() if m != "llama3.1-405b"])
def test_cli_every_shipped_model(tmp_path: Path, name: str) -> None:
    tiny = name.startswith("tiny")
    tps = "1,8" if tiny else "1,8,16"
    rows = _cli(tmp_path, "--model", name, "--tp", tps, "--phase", "decode", "--mode", "unfused,fused-ho",
                "--prompt-len", "16", "--context-len", "32")
    assert {r["model"] for r in rows} == {name} and len(rows) == 2 * len(tps.split(","))


def test_cli_405b_smoke(tmp_path: Path) -> None:
    rows = _cli(tmp_path, "--model", "llama3.1-405b", "--tp", "8,16", "--phase", "decode", "--mode", "fused-ho")
    by_tp = {r["tp"]: r for r in rows}
    assert by_tp[8]["spilled_layers"] > 0 and by_tp[8]["spill_tier"] == "ddr"  # 101 GB/socket > 64 GiB
    assert by_tp[16]["spilled_layers"] == 0
    assert by_tp[16]["latency_ns"] < by_tp[8]["latency_ns"]


def test_cli_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["tp-scaling", "--backend", "local", "--no-progress", "--json", str(tmp_path / "x.json"),
            "--out", str(tmp_path)]
    assert main([*base, "--model", "tiny-llama", "--tp", "16"]) == 2
    assert "tp: got 16" in capsys.readouterr().err
    assert main([*base, "--tp", "3"]) == 2
    assert main([*base, "--mode", "fused"]) == 2
    assert main([*base, "--phase", "generate"]) == 2
    assert "--tokens" in capsys.readouterr().err
    assert main([*base, "--platform", "dgx-a100", "--profile", "sn40l"]) == 2
    assert not (tmp_path / "x.json").exists()
