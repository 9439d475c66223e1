"""Shared fixtures. Ray is started once per session, bound to 127.0.0.1, and only
shut down through ``ray.shutdown()`` (never ``ray stop``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray fixes its auth mode when it is first imported; a test module that imports ray at
# collection time must already see token mode, or the session's Ray refuses this driver.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Commands run by the tests write their default run directories (runs/...) here, not into the checkout.
if "SN40L_EMU_RUNS_DIR" not in os.environ:
    import tempfile

    os.environ["SN40L_EMU_RUNS_DIR"] = os.path.join(tempfile.mkdtemp(prefix="sn40l-emu-test-runs-"), "runs")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray for the whole test session (tier 2 tests)."""
    from sn40l_emu.cluster.bringup import start_local_ray

    handle = start_local_ray(num_cpus=4)
    try:
        yield None
    finally:
        handle.shutdown()


CLUSTER_BUDGET_S = 1800  # the script starts no scenario after this; an idle machine needs about two minutes
CLUSTER_START_ATTEMPTS = 2  # a cluster that did not come up at all (Ray's raylet start-up window): once more


@pytest.fixture(scope="session")
def cluster_seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What ``cluster_scenarios.py`` saw on the one ``cluster_utils`` cluster of the session.

    Starting Ray nodes is most of a cluster test's cost, so test_cluster_ray.py and
    test_fleet_cluster.py share this one run (a subprocess: the cluster needs a Ray of its
    own). The script stops starting scenarios after ``CLUSTER_BUDGET_S`` and shuts its
    cluster down itself; the hard timeout is a last resort, and whatever a killed run
    leaves behind is in the session it was started in, which only this fixture started.
    """
    data: dict[str, Any] = {}
    for attempt in range(CLUSTER_START_ATTEMPTS):
        out = tmp_path_factory.mktemp(f"cluster{attempt}") / "scenarios.json"
        proc = _run_in_own_session([sys.executable, str(HERE / "cluster_scenarios.py"), str(out),
                                    str(CLUSTER_BUDGET_S)], timeout_s=CLUSTER_BUDGET_S + 600)
        assert out.exists(), f"cluster scenarios wrote nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
        data = json.loads(out.read_text())
        if "cluster" not in data:
            break
    return data


def _run_in_own_session(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``cmd`` in a process session of its own (without RAY_ADDRESS); afterwards anything left in
    that session (Ray daemons of a failed start) is killed by its process group."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
