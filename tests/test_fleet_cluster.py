"""A CoE fleet on a four-Ray-node ``cluster_utils`` cluster (32 sockets) gives the in-process ns.

The cluster needs a Ray of its own, so ``fleet_cluster_scenario.py`` runs in a
subprocess (bounded by a generous timeout, no timing asserted) and reports
what it saw; the tests check where the sockets landed and the nanoseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster
HERE = Path(__file__).parent


def _run_once(out: Path) -> subprocess.CompletedProcess[str]:
    """One scenario run in a session of its own; whatever it leaves behind (Ray daemons of a
    failed start) is killed by that session's process group, which only this run started."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(HERE / "fleet_cluster_scenario.py"), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for attempt in range(3):  # a raylet that misses Ray's 30 s start-up window: start again
        out = tmp_path_factory.mktemp(f"fleet{attempt}") / "fleet.json"
        proc = _run_once(out)
        assert out.exists(), f"fleet scenario wrote nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
        data: dict[str, Any] = json.loads(out.read_text())
        if "startup_error" not in data:
            break
    assert "startup_error" not in data, data["startup_error"]
    assert "error" not in data, data["error"]
    assert "error" not in data["ray"], data["ray"]["error"]
    return data


def test_each_emulated_node_sits_on_one_ray_node_and_the_fleet_spans_all_four(seen: dict[str, Any]) -> None:
    ray = seen["ray"]
    assert all(len(h) == 1 for h in ray["homes"])  # a node's eight sockets share one machine
    assert sorted(h[0] for h in ray["homes"]) == sorted(seen["ray_node_ids"])  # one per Ray node


def test_the_fleet_on_ray_gives_the_in_process_nanoseconds(seen: dict[str, Any]) -> None:
    ray, local = seen["ray"], seen["local"]
    assert ray["costs"] == local["costs"]
    assert ray["rows"] == local["rows"]  # the wall-clock parts ("wall_s") are not compared
    for r in ray["rows"]:
        assert r["completed"] == r["requests"] == 300 and r["sockets"] == 32
        assert 0 < r["latency_p50_ns"] <= r["latency_p99_ns"]
