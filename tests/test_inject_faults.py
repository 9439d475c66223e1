"""Faults at any virtual time, inside a step: they stop it at that nanosecond, and every request ends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import ConfigError, SocketKilledError
from sn40l_emu.inject import events
from sn40l_emu.inject.runner import ScenarioRunner
from sn40l_emu.inject.scenario import load_scenario, parse_scenario
from sn40l_emu.program import KernelOp, Launch, MemStream, Program, Stage, StreamKind, Tier
from sn40l_emu.socket_actor.socket_model import SocketModel
from sn40l_emu.socket_actor.state_changes import FailAt, SetDegradation, apply_change

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

PROFILE = load_profile("sn40l")
RING = load_profile("sn40l", ["p2p.topology=ring"])
SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"
T_MID = 3_500_000  # inside the second 64 MiB ring all-reduce (each takes ~2.36 ms)


def _kernel(name: str, flops: int) -> KernelOp:
    return KernelOp(name, (Stage("s", flops, 0),), (MemStream(Tier.HBM, 1000, StreamKind.WEIGHTS),), Launch.HO, True)


def test_a_socket_killed_inside_a_kernel_stops_at_that_ns() -> None:
    m = SocketModel(0, PROFILE)
    k = _kernel("k", 10**12)
    one = m.kernel_cost(k).total_ns
    apply_change(m, None, FailAt(one + one // 3))
    with pytest.raises(SocketKilledError) as err:
        asyncio.run(m.run_program(Program.of("p", [k, k, k])))
    assert err.value.at_ns == one + one // 3 == m.clock.now_ns
    cut = [e for e in err.value.events if "(killed)" in e.name]  # type: ignore[attr-defined]
    assert [(e.start_ns, e.dur_ns) for e in cut] == [(one, one // 3)]


def test_a_straggler_from_a_virtual_time_slows_only_kernels_starting_after_it() -> None:
    m = SocketModel(0, PROFILE)
    k = _kernel("k", 10**13)
    one = m.kernel_cost(k).total_ns
    apply_change(m, None, SetDegradation(compute_factor=0.5, from_ns=one // 2))
    res = asyncio.run(m.run_program(Program.of("p", [k, k])))
    assert res.kernel_ns[0] == one  # started before: whole kernel at full speed
    assert res.kernel_ns[1] / one == pytest.approx(2.0, rel=2e-3)


def _allreduce(evs: list[dict], repeats: int = 4) -> object:
    sc = parse_scenario({"backend": "local", "set": ["p2p.topology=ring"], "events": evs,
                         "workload": {"kind": "allreduce", "size_bytes": "64 MiB", "repeats": repeats,
                                      "algo": "ring", "chunks": 8}})
    return ScenarioRunner(sc, LocalNode(RING)).run()


@pytest.mark.parametrize("event", [{"kind": "link_down", "src": 3, "dst": 4}, {"kind": "kill_socket", "socket": 5}])
def test_an_untraced_node_stops_at_the_same_ns_as_a_traced_one(event: dict) -> None:
    """Untraced, the in-process collectives would run batched (no frames to cut): a scheduled
    link-down or death sends them down the frame path, so the fault strikes at the same nanosecond."""
    evs = [{"at": T_MID, **event}]
    sc = parse_scenario({"backend": "local", "set": ["p2p.topology=ring"], "events": evs,
                         "workload": {"kind": "allreduce", "size_bytes": "64 MiB", "repeats": 3,
                                      "algo": "ring", "chunks": 8}})
    traced = ScenarioRunner(sc, LocalNode(RING)).run()
    untraced = ScenarioRunner(sc, LocalNode(RING, trace=False)).run()
    assert untraced.rows == traced.rows and untraced.retried == traced.retried == 1
    assert untraced.outcomes == traced.outcomes and untraced.events == traced.events
    assert [(e.applied_at_ns, e.struck_at_ns) for e in untraced.events] == [(T_MID, T_MID)]


def test_link_down_inside_a_ring_allreduce_stops_it_at_that_ns_and_the_retry_reroutes() -> None:
    base = _allreduce([])
    d = base.rows[0]["time_ns"]
    assert d < T_MID < 2 * d
    rep = _allreduce([{"at": T_MID, "kind": "link_down", "src": 3, "dst": 4}])
    assert rep.submitted == rep.completed + rep.failed == 4 and rep.failed == 0 and rep.retried == 1
    stopped = [e for e in rep.trace if e.name == "allreduce (failed)"]
    assert sorted(e.socket for e in stopped) == list(range(8))
    assert {(e.start_ns, e.start_ns + e.dur_ns) for e in stopped} == {(d, T_MID)}  # every socket, at T
    retry = [e for e in rep.trace if e.name.startswith("retry")]
    assert [e.start_ns for e in retry] == [T_MID]
    rows = rep.rows
    assert rows[0]["time_ns"] == d and rows[1]["attempts"] == 2
    assert rows[1]["time_ns"] == rows[2]["time_ns"] == rows[3]["time_ns"] > d  # rerouted ring, from T on
    ev = rep.events[0]
    assert ev.applied_at_ns == ev.struck_at_ns == T_MID and ev.retried == 1


def test_a_partitioned_ring_fails_its_requests_with_their_reason() -> None:
    rep = _allreduce([{"at": T_MID, "kind": "link_down", "src": 3, "dst": 4},
                      {"at": T_MID, "kind": "link_down", "src": 7, "dst": 0}])
    assert (rep.submitted, rep.completed, rep.failed) == (4, 1, 3)
    failed = [o for o in rep.outcomes if o.status == "failed"]
    assert [o.id for o in failed] == [1, 2, 3]
    assert all(o.reason.startswith("no route from socket") for o in failed)


def test_cli_writes_the_json_of_a_partitioned_ring(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", "inject", str(SCENARIOS / "ring-partition.yaml"),
                        "--out", str(out), "--json", str(out / "r.json")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "r.json").read_text())
    req = doc["requests"]
    assert req["submitted"] == req["completed"] + req["failed"] == 4 and req["failed"] == 3
    assert all(o["reason"] for o in doc["outcomes"] if o["status"] == "failed")


def test_cli_refuses_an_unwritable_json_path_before_running(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", "inject", str(SCENARIOS / "ring-partition.yaml"),
                        "--json", "/dev/null/x.json", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 2 and "--json" in r.stderr and "Traceback" not in r.stderr


_COE = {"kind": "coe", "model": "tiny-llama", "experts": 6, "batch": 2, "tokens": 2, "prompt_len": 4,
        "batches": 3, "workload": "uniform"}


def _coe(evs: list[dict], **wl: object) -> object:
    sc = parse_scenario({"backend": "local", "events": evs, "workload": {**_COE, **wl}})
    return ScenarioRunner(sc, LocalNode(PROFILE)).run()


def test_a_socket_killed_inside_a_batch_fails_the_step_at_that_ns_and_only_the_rest_is_retried() -> None:
    base = _coe([])
    ends = [o.end_ns for o in base.outcomes]
    # inside request 3 (batch 1, its second request): the middle of socket 5's longest op there
    # (between device steps the host runs; a kill there strikes at the next step)
    ops = [e for e in base.trace if e.socket == 5 and ends[2] <= e.start_ns and e.start_ns + e.dur_ns <= ends[3]
           and e.dur_ns > 1]
    op = max(ops, key=lambda e: (e.dur_ns, -e.start_ns))
    t = op.start_ns + op.dur_ns // 2
    rep = _coe([{"at": t, "kind": "kill_socket", "socket": 5}])
    assert rep.submitted == rep.completed == 6 and rep.retried == 1  # request 2 had completed
    assert [o.attempts for o in rep.outcomes] == [1, 1, 1, 2, 1, 1]
    assert rep.outcomes[2].end_ns == ends[2]  # before the kill: untouched
    ev = rep.events[0]
    assert ev.struck_at_ns == t and ev.recovery_ns > 0
    cut = [e for e in rep.trace if e.socket == 5 and e.name.endswith(("(killed)", "(failed)"))]
    assert len(cut) == 1 and cut[0].start_ns + cut[0].dur_ns == t  # the op it was in stops at t


def test_after_requests_counts_failed_requests_too() -> None:
    rep = _coe([{"after_requests": 2, "kind": "kill_socket", "socket": 1, "restart": False},
                {"after_requests": 4, "kind": "restart_socket", "socket": 1}], batches=4)
    # batch 1 fails (2 more requests ended: 4), so the restart fires before batch 2
    assert (rep.completed, rep.failed) == (6, 2)
    assert rep.events[1].applied_at_ns is not None and rep.events[1].requests_done_at_apply == 4
    assert [o.status for o in rep.outcomes] == ["completed"] * 2 + ["failed"] * 2 + ["completed"] * 4


def test_serve_reports_latency_before_during_and_after_an_event() -> None:
    sc = parse_scenario({"backend": "local", "events": [{"at": "150us", "kind": "kill_socket", "socket": 1}],
                         "workload": {**_COE, "kind": "serve", "requests": 8, "rate_per_s": 20000}})
    rep = ScenarioRunner(sc, LocalNode(PROFILE)).run()
    assert rep.submitted == rep.completed + rep.failed == 8 and rep.retried >= 1
    w = rep.events[0].windows
    assert set(w) == {"before", "during", "after"}
    assert sum(x["n"] for x in w.values()) == rep.completed
    assert rep.serving["p50_ns"] <= rep.serving["p99_ns"]


def test_a_socket_killed_between_programs_fails_the_next_collective_at_once() -> None:
    """At 150 us the sockets wait on the host's Program Load into the router: socket 1 dies between
    programs, so in the router it only ghosts its collectives. A traced node must take the frame
    path on every rank, the ghost included; a ghost waiting alone at the in-process rendezvous
    would hold the step until the P2P wall-clock timeout (here 5 s instead of 60) and fail it."""
    prof = load_profile("sn40l", ["p2p.timeout_s=5"])
    sc = parse_scenario({"backend": "local", "events": [{"at": "150us", "kind": "kill_socket", "socket": 1}],
                         "workload": {**_COE, "kind": "serve", "requests": 8, "rate_per_s": 20000}})
    rep = ScenarioRunner(sc, LocalNode(prof)).run()
    assert (rep.submitted, rep.completed, rep.failed) == (8, 8, 0) and rep.retried >= 1
    assert "timed out" not in " ".join(str(o.reason) for o in rep.outcomes)


def test_tp_generation_killed_mid_layer_is_retried_after_recovery() -> None:
    wl = {"kind": "tp", "model": "tiny-llama", "batch": 1, "tokens": 3, "prompt_len": 8, "generations": 2}
    base = ScenarioRunner(parse_scenario({"backend": "local", "workload": wl}), LocalNode(PROFILE)).run()
    g = base.rows[0]["time_ns"]
    rep = ScenarioRunner(parse_scenario({"backend": "local", "workload": wl,
                                         "events": [{"at": g // 2, "kind": "kill_socket", "socket": 2}]}),
                         LocalNode(PROFILE)).run()
    assert (rep.completed, rep.failed, rep.retried) == (2, 0, 1)
    assert rep.rows[0]["attempts"] == 2 and rep.rows[0]["time_ns"] == g  # the retry runs a whole generation
    assert rep.events[0].struck_at_ns == g // 2 and rep.events[0].recovery_ns > 0


# ---- typed events -------------------------------------------------------------------
def test_every_kind_has_a_typed_event_class() -> None:
    assert set(events.EVENT_TYPES) == set(events.EventKind)
    for kind, cls in events.EVENT_TYPES.items():
        assert cls.kind is kind


def test_typed_events_validate_themselves() -> None:
    assert events.KillSocket(3, mode="process").mode is events.KillMode.PROCESS
    assert events.LinkDegrade(src=0, dst=1, bw_factor=0.1, extra_latency_ns="2us").extra_latency_ns == 2000
    with pytest.raises(ConfigError) as err:
        events.LinkDegrade(src=0, dst=0)
    assert err.value.field == "link_degrade.dst"
    with pytest.raises(ConfigError):
        events.Straggler(sockets=1, compute_factor=float("inf"))
    with pytest.raises(ConfigError) as err:
        events.Straggler(sockets=9, compute_factor=0.5).checked(8)
    assert err.value.field == "straggler.socket"
    assert events.DdrThrottle(factor=0.5).checked(4).sockets == (0, 1, 2, 3)


def test_shipped_scenarios_parse() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.yaml"))
    assert {"link-down-mid-allreduce.yaml", "ring-partition.yaml"} <= set(names)
    for p in SCENARIOS.glob("*.yaml"):
        assert load_scenario(p).events


@pytest.mark.ray
def test_faults_inside_a_step_give_the_same_nanoseconds_on_ray(ray_session: None) -> None:
    from sn40l_emu.cluster.ray_node import RayNode

    evs = [{"at": T_MID, "kind": "link_down", "src": 3, "dst": 4}]
    local = _allreduce(evs)
    node = RayNode.create(RING)
    try:
        sc = parse_scenario({"set": ["p2p.topology=ring"], "events": evs,
                             "workload": {"kind": "allreduce", "size_bytes": "64 MiB", "repeats": 4,
                                          "algo": "ring", "chunks": 8}})
        rep = ScenarioRunner(sc, node).run()
        assert rep.rows == local.rows  # type: ignore[attr-defined]
        stopped = {e.start_ns + e.dur_ns for e in rep.trace if e.name == "allreduce (failed)"}
        assert stopped == {T_MID}
    finally:
        node.close()


@pytest.mark.ray
def test_a_socket_process_killed_inside_a_step_is_replaced_and_the_step_retried(ray_session: None) -> None:
    from sn40l_emu.cluster.ray_node import RayNode

    wl = {"kind": "tp", "model": "tiny-llama", "batch": 1, "tokens": 3, "prompt_len": 8, "generations": 2}
    base = ScenarioRunner(parse_scenario({"backend": "local", "workload": wl}), LocalNode(PROFILE)).run()
    g = base.rows[0]["time_ns"]
    node = RayNode.create(PROFILE)
    try:
        pid = node.pids()[2]
        sc = parse_scenario({"workload": wl, "events": [{"at": g // 2, "kind": "kill_socket", "socket": 2,
                                                         "mode": "process"}]})
        rep = ScenarioRunner(sc, node).run()
        assert (rep.completed, rep.failed, rep.retried) == (2, 0, 1)
        assert rep.events[0].struck_at_ns == g // 2
        assert node.pids()[2] != pid
    finally:
        node.close()
