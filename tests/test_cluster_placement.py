"""Tier 1 for multi-machine set-ups: placement parsing and capacity, safe defaults of the
CLI and of ``deploy/`` (no Ray is started here), and static checks that nothing loads
YAML unsafely or unpickles."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sn40l_emu.cluster.placement import (
    Placement,
    PlacementSpec,
    check_capacity,
    parse_placement,
    resolve_node_ids,
    socket_map_from_json,
)
from sn40l_emu.errors import ConfigError, NoCapacityError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PKG = ROOT / "sn40l_emu"
NODES = [
    {"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1", "Alive": True},
    {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2", "Alive": True},
    {"NodeID": "c" * 56, "NodeManagerAddress": "10.0.0.2", "Alive": True},
]


# ---- placement -----------------------------------------------------------------------
def test_pack_and_spread_parse() -> None:
    assert parse_placement("pack", 8) == PlacementSpec(Placement.PACK, source="pack")
    assert parse_placement(" SPREAD ", 16).kind is Placement.SPREAD


@pytest.mark.parametrize("data", [
    {"0-7": "10.0.0.1", "8-15": "10.0.0.2"},
    {**{str(i): "10.0.0.1" for i in range(8)}, "8-15": "10.0.0.2"},
    ["10.0.0.1"] * 8 + ["10.0.0.2"] * 8,
])
def test_map_file_forms(tmp_path: Path, data: object) -> None:
    f = tmp_path / "map.json"
    f.write_text(json.dumps(data))
    spec = parse_placement(f"map:{f}", 16)
    assert spec.kind is None
    assert spec.socket_map == ("10.0.0.1",) * 8 + ("10.0.0.2",) * 8


@pytest.mark.parametrize(("data", "words"), [
    ({"0-6": "x"}, "missing [7]"),
    ({"0-7": "x", "3": "y"}, "each socket named once"),
    ({"0-8": "x"}, "within 0..7"),
    ({"zero": "x"}, "a socket index or a range"),
    (["x"] * 7, "a list of 8"),
    ({"0-7": 3}, "a Ray node id or a machine IP"),
])
def test_bad_maps_name_what_is_wrong(data: object, words: str) -> None:
    with pytest.raises(ConfigError, match="placement map") as err:
        socket_map_from_json(data, 8)
    assert words in str(err.value)


def test_bad_placement_text_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("pack | spread | map:FILE.json")):
        parse_placement("diagonal", 8)
    with pytest.raises(ConfigError, match="readable JSON map file"):
        parse_placement(f"map:{tmp_path / 'nope.json'}", 8)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="valid JSON"):
        parse_placement(f"map:{tmp_path / 'bad.json'}", 8)


def test_map_entries_resolve_to_node_ids() -> None:
    assert resolve_node_ids(["10.0.0.1", "b" * 56], NODES) == ["a" * 56, "b" * 56]
    with pytest.raises(ConfigError, match="several Ray nodes share that IP"):
        resolve_node_ids(["10.0.0.2"], NODES)
    with pytest.raises(ConfigError, match="no alive Ray node has it"):
        resolve_node_ids(["10.9.9.9"], NODES)


def test_capacity_is_checked_before_anything_is_created() -> None:
    free = {"a" * 56: 8, "b" * 56: 3}
    check_capacity(11, None, free)
    check_capacity(4, ["a" * 56] * 4, free)
    with pytest.raises(NoCapacityError) as err:
        check_capacity(12, None, free)
    assert (err.value.needed, err.value.free) == (12, 11)
    assert "12 socket(s) need a home" in str(err.value) and "11 free" in str(err.value)
    with pytest.raises(NoCapacityError, match="needs 4 has 3"):
        check_capacity(8, ["a" * 56] * 4 + ["b" * 56] * 4, free)


# ---- safe defaults: CLI ---------------------------------------------------------------
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SN40L_EMU_STATE_DIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "sn40l_emu.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_up_refuses_all_interfaces_without_allow_open(tmp_path: Path) -> None:
    for bind in ("0.0.0.0", "::"):
        r = _cli("up", "--name", "t-open", "--bind", bind, tmp_path=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "bind" in r.stderr and "--allow-open" in r.stderr and "runs any code" in r.stderr
        assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.json"))  # nothing was started


@pytest.mark.slow
def test_up_rejects_bad_sockets_and_placement(tmp_path: Path) -> None:
    r = _cli("up", "--name", "t-bad", "--sockets", "12", tmp_path=tmp_path)
    assert r.returncode == 2 and "sockets" in r.stderr and "multiple of 8" in r.stderr
    r = _cli("up", "--name", "t-bad", "--placement", "diagonal", tmp_path=tmp_path)
    assert r.returncode == 2 and "placement" in r.stderr


# ---- safe defaults: deploy/ -------------------------------------------------------------
def _script(name: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SN40L_DEPLOY_DIR": str(tmp_path / "deploy"), "RAY": "ray",
           "RAY_AUTH_TOKEN": "test-token-not-used"}
    return subprocess.run([str(DEPLOY / name), *args], env=env, capture_output=True, text=True, timeout=60)


def test_start_head_defaults_to_loopback_no_dashboard_and_the_socket_resource(tmp_path: Path) -> None:
    r = _script("start-head.sh", "--sockets", "8", "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout
    assert "--node-ip-address 127.0.0.1" in cmd and "--include-dashboard=false" in cmd
    assert '{"sn40l_socket": 8}' in cmd.replace("\\", "") and "--block" in cmd


@pytest.mark.parametrize("script", ["start-head.sh", "start-worker.sh"])
def test_deploy_scripts_refuse_all_interfaces_unless_allowed(tmp_path: Path, script: str) -> None:
    extra = ["--address", "10.0.0.1:6379"] if script == "start-worker.sh" else []
    r = _script(script, *extra, "--bind", "0.0.0.0", "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 2 and "refusing" in r.stderr and "runs any code" in r.stderr
    r = _script(script, *extra, "--bind", "0.0.0.0", "--allow-open", "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 0 and "warning" in r.stderr and "runs any code" in r.stderr
    assert "--node-ip-address 0.0.0.0" in r.stdout


def test_worker_needs_the_cluster_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=str(tmp_path), SN40L_DEPLOY_DIR=str(tmp_path / "deploy"), RAY="ray")
    r = subprocess.run([str(DEPLOY / "start-worker.sh"), "--address", "127.0.0.1:6379"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "auth_token" in r.stderr and "ray get-auth-token" in r.stderr


def test_stop_with_nothing_started_stops_nothing(tmp_path: Path) -> None:
    r = _script("stop.sh", tmp_path=tmp_path)
    assert r.returncode == 0 and "nothing to stop" in r.stdout
    scripts = "".join(p.read_text() for p in DEPLOY.glob("*.sh")).replace("`ray stop`", "")  # never run
    assert "ray stop" not in scripts  # the scripts never run it


@pytest.mark.slow
def test_cluster_launcher_yaml_is_valid_and_safe() -> None:
    cfg = yaml.safe_load((DEPLOY / "cluster-onprem.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert not any("ray stop" in c for c in starts)  # never: the launcher's default kills every Ray process
    assert any("start-head.sh" in c and "--sockets" in c for c in starts)
    assert any("start-worker.sh" in c and "--sockets" in c for c in starts)
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    # Ray's own validator, in a subprocess: importing ray here would fix this process's Ray
    # config (auth mode) before the session fixture prepares it.
    check = ("import sys, yaml\n"
             "from ray.autoscaler._private.util import prepare_config, validate_config\n"
             "validate_config(prepare_config(yaml.safe_load(open(sys.argv[1]))))\n")
    r = subprocess.run([sys.executable, "-c", check, str(DEPLOY / "cluster-onprem.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ---- safe defaults: static ---------------------------------------------------------------
def _calls(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name):
                out.append(f"{base.id}.{node.func.attr}")
    return out


@pytest.mark.slow
def test_yaml_only_through_the_safe_loader_and_no_pickle_on_the_wire() -> None:
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        calls = _calls(tree)
        bad_yaml = [c for c in calls if c in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all")]
        assert not bad_yaml, f"{path}: {bad_yaml} (use yaml.safe_load)"
        if "p2p" in path.parts:
            imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert not imported & {"pickle", "cloudpickle", "marshal", "dill", "shelve"}, path
            assert not [c for c in calls if c.startswith("pickle.")], path
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(
                    k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value
                    for k in node.keywords):
                raise AssertionError(f"{path}:{node.lineno}: allow_pickle=True")


def test_capacity_waits_for_slots_being_released(monkeypatch: pytest.MonkeyPatch) -> None:
    from sn40l_emu.cluster import placement as pl

    free_seq = iter([{"a": 7, "b": 8}, {"a": 7, "b": 8}, {"a": 8, "b": 8}])
    monkeypatch.setattr(pl, "free_sockets_per_node", lambda: next(free_seq))
    monkeypatch.setattr(pl, "total_sockets_per_node", lambda: {"a": 8, "b": 8})
    monkeypatch.setattr("time.sleep", lambda s: None)
    pl.check_capacity(16, None, wait_s=60.0)  # a slot still held is released on the third look


def test_capacity_does_not_wait_when_the_cluster_is_too_small(monkeypatch: pytest.MonkeyPatch) -> None:
    from sn40l_emu.cluster import placement as pl

    looks = []
    monkeypatch.setattr(pl, "free_sockets_per_node", lambda: looks.append(1) or {"a": 7, "b": 8})
    monkeypatch.setattr(pl, "total_sockets_per_node", lambda: {"a": 7, "b": 8})
    with pytest.raises(NoCapacityError, match="16 socket"):
        pl.check_capacity(16, None, wait_s=60.0)
    assert len(looks) == 1
