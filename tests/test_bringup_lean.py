"""Tier 2: the private local Ray runs without the Ray processes nothing here uses, and still
refuses a driver with the wrong token (README "Safety", "Emulator speed")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

LEFT_OUT = ("autoscaler/_private/monitor.py", "_private/log_monitor.py", "dashboard/dashboard.py")


def _started_commands() -> list[str]:
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return out


def test_local_ray_leaves_out_the_monitor_log_monitor_and_api_server(ray_session: None) -> None:
    cmds = _started_commands()
    assert any("gcs_server" in c for c in cmds) and any("raylet" in c for c in cmds), cmds
    for script in LEFT_OUT:
        assert not any(script in c for c in cmds), (script, cmds)


@pytest.mark.slow
def test_local_ray_refuses_a_driver_with_the_wrong_token(ray_session: None, tmp_path: Path) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="wrong-token-" + "0" * 32)
    code = f"import ray; ray.init(address={address!r}); print('connected')"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0 and "connected" not in r.stdout, r.stdout + r.stderr[-2000:]

