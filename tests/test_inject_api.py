"""The Python scripting API for injection, and the example scripts that use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sn40l_emu import events
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import ConfigError
from sn40l_emu.inject import InjectionPlan
from sn40l_emu.inject.runner import ScenarioRunner
from sn40l_emu.inject.scenario import parse_scenario

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_SMALL = {"model": "tiny-llama", "experts": 6, "batch": 2, "tokens": 2, "prompt_len": 4, "batches": 3,
          "workload": "uniform"}


def test_importing_the_package_loads_no_events() -> None:
    code = "import sys, sn40l_emu; print(any(m.startswith('sn40l_emu.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ))
    assert out.stdout.strip() == "False"


def test_a_plan_gives_the_same_nanoseconds_as_the_same_scenario_file() -> None:
    plan = InjectionPlan("sn40l", backend="local", node=LocalNode(load_profile("sn40l")))
    plan.schedule(events.DdrThrottle(factor=0.25), after_requests=2)
    plan.schedule(events.Straggler(sockets=2, compute_factor=0.5), at="60us")
    a = plan.run_coe(**_SMALL)
    sc = parse_scenario({"backend": "local", "workload": {"kind": "coe", **_SMALL}, "events": [
        {"after_requests": 2, "kind": "ddr_throttle", "factor": 0.25},
        {"at": "60us", "kind": "straggler", "socket": 2, "compute_factor": 0.5}]})
    b = ScenarioRunner(sc, LocalNode(load_profile("sn40l"))).run()
    assert a.rows == b.rows and [e.applied_at_ns for e in a.events] == [e.applied_at_ns for e in b.events]


def test_schedule_checks_the_event_against_the_node() -> None:
    plan = InjectionPlan("sn40l", backend="local")
    with pytest.raises(ConfigError) as err:
        plan.schedule(events.KillSocket(8), at="1ms")
    assert err.value.field == "events[0] (kill_socket).socket"
    with pytest.raises(ConfigError):
        plan.schedule(events.KillSocket(1), at="1ms", after_requests=3)
    with pytest.raises(ConfigError):
        plan.schedule("kill_socket", at=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("inject_*.py")))
def test_example_scripts_run(script: str) -> None:
    r = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted" in r.stdout


def test_emulator_schedule_runs_coe_through_the_injection_plan() -> None:
    import sn40l_emu

    plan = InjectionPlan("sn40l", backend="local")
    plan.schedule(events.DdrThrottle(factor=0.25), after_requests=2)
    want = plan.run_coe(**_SMALL)
    with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
        emu.schedule(sn40l_emu.events.DdrThrottle(factor=0.25), after_requests=2)
        got = emu.run_coe(**_SMALL)
        assert emu.scheduled == []  # used up by the run
    assert got.rows == want.rows and got.submitted == got.completed == want.completed
    assert [e.applied_at_ns for e in got.events] == [e.applied_at_ns for e in want.events]
