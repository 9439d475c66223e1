"""Tier 3: real ``ray start`` processes on two "machines" = two network namespaces.

The test makes two network namespaces joined by a veth pair (10.47.0.1 and
10.47.0.2, nothing else routable), starts a Ray head in one and a second
raylet in the other with ``deploy/start-head.sh`` / ``deploy/start-worker.sh``
(token auth on, a token file the test writes), runs a TP8 all-reduce whose
sockets are spread over both raylets from a driver inside the head's
namespace, checks every TCP/UDP endpoint of every process involved, and stops
exactly what it started with ``deploy/stop.sh`` (by pid file; it never
runs the command that stops every Ray process). Without root or ``ip netns`` the test skips and says why.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sn40l_emu.cluster.netcheck import namespace_addresses, process_tree, running

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
HEAD_IP, WORKER_IP = "10.47.0.1", "10.47.0.2"


def _run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    t = time.monotonic()  # wall-clock ok: test bookkeeping
    r = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{time.monotonic() - t:5.1f} s  {' '.join(cmd)[:90]}")  # wall-clock ok
    return r


@dataclass
class Netns:
    head: str
    worker: str


def _cannot_make_namespaces() -> str:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "making network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    return ""


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    why = _cannot_make_namespaces()
    if why:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    ns = Netns(f"sn40l-{tag}-head", f"sn40l-{tag}-worker")
    va, vb = f"s4h{tag}", f"s4w{tag}"
    made: list[str] = []
    try:
        for name in (ns.head, ns.worker):
            r = _run("ip", "netns", "add", name)
            if r.returncode:
                pytest.skip(f"cannot make a network namespace: {r.stderr.strip()}")
            made.append(name)
        steps = [
            ("ip", "link", "add", va, "type", "veth", "peer", "name", vb),
            ("ip", "link", "set", va, "netns", ns.head),
            ("ip", "link", "set", vb, "netns", ns.worker),
            ("ip", "-n", ns.head, "addr", "add", f"{HEAD_IP}/24", "dev", va),
            ("ip", "-n", ns.worker, "addr", "add", f"{WORKER_IP}/24", "dev", vb),
            ("ip", "-n", ns.head, "link", "set", "lo", "up"),
            ("ip", "-n", ns.worker, "link", "set", "lo", "up"),
            ("ip", "-n", ns.head, "link", "set", va, "up"),
            ("ip", "-n", ns.worker, "link", "set", vb, "up"),
        ]
        for step in steps:
            r = _run(*step)
            if r.returncode:
                pytest.skip(f"cannot wire the namespaces ({' '.join(step)}): {r.stderr.strip()}")
        yield ns
    finally:
        for name in made:  # deleting a namespace removes the veth end inside it
            _run("ip", "netns", "del", name)


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid} state={stat[0]} ppid={stat[1]} sid={stat[3]} {cmd[:100]}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


def _session_members(*pids: int) -> set[int]:
    """Processes still running in the sessions of the ``ray start`` pids we launched (zombies are dead)."""
    return running(process_tree([p for p in pids if p], sessions=[p for p in pids if p]))


def test_ray_start_head_and_worker_in_namespaces(netns: Netns, tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    deploy_dir = tmp_path / "deploy"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(SN40L_DEPLOY_DIR=str(deploy_dir), RAY_AUTH_TOKEN_PATH=str(token), RAY_AUTH_MODE="token",
               RAY=str(Path(sys.executable).with_name("ray")), STOP_GRACE_S="2")
    pids: dict[str, int] = {}
    try:
        head = _run("ip", "netns", "exec", netns.head, str(DEPLOY / "start-head.sh"), "--bind", HEAD_IP,
                    "--port", "0", "--sockets", "4", "--cpus", "1", env=env, timeout=180)
        assert head.returncode == 0, head.stdout + head.stderr
        pids["head"] = int((deploy_dir / "head.pid").read_text())
        address = (deploy_dir / "head.address").read_text().strip()
        assert address.startswith(f"{HEAD_IP}:")
        worker = _run("ip", "netns", "exec", netns.worker, str(DEPLOY / "start-worker.sh"), "--address",
                      address, "--bind", "auto", "--sockets", "4", "--cpus", "1", env=env, timeout=180)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        assert f"as {WORKER_IP}" in worker.stdout  # --bind auto found the veth address
        pids["worker"] = int((deploy_dir / "worker.pid").read_text())

        drv = _run("ip", "netns", "exec", netns.head, sys.executable, str(ROOT / "tests" / "cluster_netns_driver.py"),
                   address, str(pids["head"]), str(pids["worker"]), env=env, timeout=240)
        lines = [ln for ln in drv.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, drv.stdout[-3000:] + drv.stderr[-3000:]
        res = json.loads(lines[-1][len("RESULT "):])

        # the eight sockets are spread over both raylets, and the all-reduce adds up
        ips = [res["node_ips"][n] for n in res["ray_nodes"]]
        assert Counter(ips) == {HEAD_IP: 4, WORKER_IP: 4}
        assert res["sums"] == [36.0] * 8  # 1 + 2 + ... + 8 on every socket
        assert len(set(res["collective_ns"])) == 1

        # nothing but the namespaces' own addresses: the namespaces carry only what we assigned
        # (plus the veths' IPv6 link-local addresses the kernel adds), and every endpoint of
        # every process we started, the driver's and the socket actors' included, uses those.
        own = namespace_addresses(pids["head"]) | namespace_addresses(pids["worker"])
        assert {a for a in own if not a.startswith("fe80:")} <= {"127.0.0.1", "::1", HEAD_IP, WORKER_IP}
        assert res["n_endpoints"] > 0 and res["n_processes"] > 4
        assert res["cross_namespace"] > 0  # raylets and actors really talked over the veth
        assert res["foreign"] == []
    finally:
        stop = _run(str(DEPLOY / "stop.sh"), *pids, env=env, timeout=120)
        left = _session_members(*pids.values())
        for pid in left:  # a safety net only: these are in the sessions we created
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert left == set(), f"processes left after deploy/stop.sh: {_describe(left)}\n{stop.stdout}{stop.stderr}"
    assert not list(deploy_dir.glob("*.pid"))
