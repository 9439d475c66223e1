"""Fault and bandwidth injection: each event kind has the direction and size the model predicts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sn40l_emu import units
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import ConfigError
from sn40l_emu.inject.changes import changes_for
from sn40l_emu.inject.runner import ScenarioRunner
from sn40l_emu.inject.scenario import parse_scenario
from sn40l_emu.program import (
    CopyOp,
    KernelOp,
    Launch,
    MemStream,
    Program,
    Stage,
    StreamKind,
    Tier,
)
from sn40l_emu.socket_actor.socket_model import SocketModel
from sn40l_emu.socket_actor.state_changes import apply_change

# scenario runs and CLI subprocesses: the slow tier
pytestmark = pytest.mark.slow

PROFILE = load_profile("sn40l")


def _allreduce(events: list[dict], algo: str = "ring", repeats: int = 4) -> list[int]:
    sc = parse_scenario({"backend": "local", "events": events,
                         "workload": {"kind": "allreduce", "size_bytes": "64 MiB", "repeats": repeats,
                                      "algo": algo, "chunks": 8}})
    rep = ScenarioRunner(sc, LocalNode(PROFILE)).run()
    assert rep.submitted == rep.completed == repeats
    return [r["time_ns"] for r in rep.rows]


def test_link_at_half_bandwidth_doubles_the_ring_bandwidth_term() -> None:
    t = _allreduce([{"after_requests": 2, "kind": "link_degrade", "src": 3, "dst": 4, "bw_factor": 0.5}])
    assert t[0] == t[1] and t[2] == t[3]
    # 64 MiB: the bandwidth term dominates; every ring step waits for the slow link
    assert 1.9 < t[2] / t[0] < 2.05


def test_link_down_reforms_the_ring_and_link_up_restores() -> None:
    t = _allreduce([{"after_requests": 1, "kind": "link_down", "src": 3, "dst": 4},
                    {"after_requests": 3, "kind": "link_up", "src": 3, "dst": 4}])
    assert t[1] == t[0]  # full mesh: a ring that avoids 3->4 exists, all hops direct
    o = _allreduce([{"after_requests": 1, "kind": "link_down", "src": 3, "dst": 4},
                    {"after_requests": 3, "kind": "link_up", "src": 3, "dst": 4}], algo="oneshot")
    assert o[1] > o[0] and o[3] == o[0]  # one-shot goes around it (two hops), then recovers


def _kernel_program(flops: int, hbm_bytes: int) -> Program:
    return Program.of("k", [KernelOp("k", (Stage("s", flops, 0),),
                                     (MemStream(Tier.HBM, hbm_bytes, StreamKind.WEIGHTS),), Launch.HO, True)])


def _time(model: SocketModel, prog: Program) -> int:
    return asyncio.run(model.run_program(prog)).duration_ns


def _apply(model: SocketModel, kind: str, **params: object) -> None:
    sc = parse_scenario({"events": [{"kind": kind, **params}]})
    for sockets, change in changes_for(sc.events[0], PROFILE, 8, model.clock.now_ns):
        if 0 in sockets:
            apply_change(model, None, change)


@pytest.mark.parametrize(("kind", "params", "prog", "ratio"), [
    ("hbm_throttle", {"factor": 0.5}, _kernel_program(1000, units.GiB), 2.0),
    ("straggler", {"socket": 0, "compute_factor": 0.5}, _kernel_program(10**13, 1000), 2.0),
    ("ddr_throttle", {"factor": 0.25}, Program.of("c", [CopyOp("c", Tier.DDR, Tier.HBM, units.GiB)]), 4.0),
    ("host_link_degrade", {"factor": 0.5}, Program.of("c", [CopyOp("c", Tier.HOST, Tier.DDR, units.GiB)]), 2.0),
])
def test_rate_events_scale_what_they_throttle(kind: str, params: dict, prog: Program, ratio: float) -> None:
    m = SocketModel(0, PROFILE)
    before = _time(m, prog)
    _apply(m, kind, **params)
    after = _time(m, prog)
    assert after / before == pytest.approx(ratio, rel=2e-3)


def _coe(events: list[dict], batches: int = 3, experts: int = 6) -> tuple:
    sc = parse_scenario({"backend": "local", "events": events,
                         "workload": {"kind": "coe", "model": "tiny-llama", "experts": experts, "batch": 2,
                                      "tokens": 2, "prompt_len": 4, "batches": batches, "workload": "uniform"}})
    node = LocalNode(PROFILE)
    rep = ScenarioRunner(sc, node).run()
    assert rep.submitted == rep.completed + rep.failed  # nothing lost
    return rep, node


def test_ddr_throttle_makes_a_cold_switch_four_times_longer() -> None:
    rep, _ = _coe([{"after_requests": 2, "kind": "ddr_throttle", "factor": 0.25}], batches=2, experts=50)
    from sn40l_emu.coe.capacity import expert_shard_bytes
    from sn40l_emu.workload import load_model

    a, b = rep.rows
    shard = expert_shard_bytes(PROFILE, load_model("tiny-llama").weight_bytes)
    rate = PROFILE.dma.ddr_hbm_bw_bytes_per_s
    assert a["switch_ns"] == a["hbm_misses"] * units.transfer_ns(shard, rate)
    assert b["switch_ns"] == b["hbm_misses"] * units.transfer_ns(shard, rate // 4)  # 4x, to the ns rounding


def test_virtual_socket_kill_is_recovered_and_the_batch_retried() -> None:
    rep, node = _coe([{"after_requests": 2, "kind": "kill_socket", "socket": 5}])
    assert rep.completed == 6 and rep.failed == 0 and rep.retried == 2
    ev = rep.events[0]
    assert ev.recovery_ns > 0 and ev.retried == 2
    assert node.models[5].memory.tiers[Tier.DDR].used_bytes > 0  # state reloaded on the new socket


def test_kill_without_restart_fails_requests_explicitly_until_restart() -> None:
    rep, _ = _coe([{"after_requests": 2, "kind": "kill_socket", "socket": 1, "restart": False},
                   {"after_requests": 2, "kind": "restart_socket", "socket": 1}], batches=3)
    # both fire before batch 1: killed, then restarted -> recovered before the batch
    assert rep.completed == 6
    rep2, _ = _coe([{"after_requests": 2, "kind": "kill_socket", "socket": 1, "restart": False}], batches=3)
    assert rep2.completed == 2 and rep2.failed == 4
    assert all("socket 1" in r["error"] for r in rep2.rows if r["status"] == "failed")


@pytest.mark.parametrize(("event", "field"), [
    ({"kind": "meteor_strike"}, "events[0].kind"),
    ({"kind": "straggler", "socket": 1, "compute_factor": -0.5}, "events[0] (straggler).compute_factor"),
    ({"kind": "link_degrade", "src": 0, "dst": 9}, "events[0] (link_degrade).dst"),
    ({"kind": "ddr_throttle"}, "events[0] (ddr_throttle).factor"),
    ({"kind": "kill_socket", "socket": 1, "at": "soon"}, "events[0] (kill_socket).at"),
])
def test_invalid_events_name_event_and_field(event: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario({"events": [event]})
    assert err.value.field == field


def test_cli_exits_2_on_bad_scenario(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"events": [{"kind": "straggler", "socket": 1, "compute_factor": -1}]}))
    r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", "inject", str(f)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 2 and "compute_factor" in r.stderr and "Traceback" not in r.stderr


def test_cli_writes_report_and_trace(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "t", "backend": "local",
                                 "workload": {"kind": "allreduce", "size_bytes": "1 MiB", "repeats": 3},
                                 "events": [{"after_requests": 1, "kind": "link_degrade", "src": 0, "dst": 1,
                                             "bw_factor": 0.5}]}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", "inject", str(f), "--out", str(out), "--json",
                        str(out / "r.json")], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "r.json").read_text())
    assert doc["requests"] == {"submitted": 3, "completed": 3, "failed": 0, "retried": 0}
    trace = json.loads((out / "inject_trace.json").read_text())
    assert any(e.get("name", "").startswith("#0 link_degrade") for e in trace["traceEvents"])


@pytest.mark.ray
def test_socket_process_killed_for_real_during_a_coe_run(ray_session: None) -> None:
    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(PROFILE)
    try:
        pid_before = node.pids()[4]
        sc = parse_scenario({"events": [{"after_requests": 2, "kind": "kill_socket", "socket": 4, "mode": "process"}],
                             "workload": {"kind": "coe", "model": "tiny-llama", "experts": 6, "batch": 2,
                                          "tokens": 2, "prompt_len": 4, "batches": 3, "workload": "uniform"}})
        rep = ScenarioRunner(sc, node).run()
        assert rep.submitted == rep.completed + rep.failed == 6
        assert rep.completed == 6 and rep.retried == 2
        assert rep.events[0].recovery_ns > 0
        assert node.pids()[4] != pid_before  # a new process serves socket 4
    finally:
        node.close()
