"""Tier 3: `sn40l-emu up`, `status --json`, `down` as a user runs them, with no cluster
running before; afterwards no Ray process that `up` started is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sn40l_emu.cli", *args], env=env,
                          capture_output=True, text=True, timeout=240)


def _procs_mentioning(text: str) -> list[str]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                out.append(f"{d.name}: {cmd[:120]}")
    return out


def test_up_status_down(tmp_path: Path) -> None:
    env = {**os.environ, "SN40L_EMU_STATE_DIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    up = _cli("up", "--name", "t-updown", env=env)
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "t-updown.json").read_text())
    try:
        assert state["address"].startswith("127.0.0.1:")
        st = _cli("status", "--name", "t-updown", "--json", env=env)
        assert st.returncode == 0, st.stderr
        data = json.loads(st.stdout)
        assert data["name"] == "t-updown"
        assert [s["index"] for s in data["sockets"]] == list(range(8))
        s0 = data["sockets"][0]
        assert s0["tiers"]["hbm"]["capacity_bytes"] == 64 * 2**30
        assert {"index", "ray_node", "clock_ns", "tiers"} <= set(s0)
        assert {"sram", "hbm", "ddr"} <= set(s0["tiers"])
        # an experiment attaches to the node that is up (no Ray of its own) and leaves its state there
        run = _cli("coe", "--platforms", "sn40l", "--experts", "2", "--batch", "1", "--tokens", "2",
                   "--model", "tiny-llama", "--prompt-len", "4", "--no-progress",
                   "--out", str(tmp_path / "out"), "--json", str(tmp_path / "out" / "c.json"),
                   env={**env, "SN40L_EMU_NODE": "t-updown"})
        assert run.returncode == 0, run.stderr
        after = json.loads(_cli("status", "--name", "t-updown", "--json", env=env).stdout)
        assert after["sockets"][0]["clock_ns"] > 0
    finally:
        dn = _cli("down", "--name", "t-updown", env=env)
    assert dn.returncode == 0, dn.stderr
    assert not (tmp_path / "t-updown.json").exists()
    assert _procs_mentioning(state["head_temp_dir"]) == []


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "SN40L_EMU_STATE_DIR": str(tmp_path)}
    for args in (["profile", "show", "nope"], ["profile", "show", "sn40l", "--set", "socket.hbm_gib=-1"]):
        r = _cli(*args, env=env)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = _cli("profile", "show", "sn40l", "--set", "socket.hbm_gib=-1", env=env)
    assert "socket.hbm_gib" in r.stderr
    r = _cli("status", "--name", "nothing-here", env=env)
    assert r.returncode != 0 and "nothing-here" in r.stderr


def test_profile_show_json_base_units(tmp_path: Path) -> None:
    """``profile show --json`` gives every value in base units under the profile's own keys, with its
    source and knob flag, so the output loads back as a profile."""
    r = _cli("profile", "show", "sn40l", "--json", env=dict(os.environ))
    data = json.loads(r.stdout)
    s = data["socket"]
    assert s["hbm_gib"]["value"] == f"{64 * 2**30} B" and s["ddr_tib"]["value"] == f"{int(1.5 * 2**40)} B"
    assert s["peak_tflops"]["value"] == "638000000000000 FLOP/s" and s["hbm_bw_tbps"]["value"] == "1800000000000 B/s"
    assert s["pcus"]["value"] == 1040 and s["pmus"]["value"] == 1040
    assert s["pcus"]["knob"] is False and "docs/model.md" in s["pcus"]["source"]
