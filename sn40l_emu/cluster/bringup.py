"""Starting and joining Ray with safe defaults.

* A Ray the emulator starts binds to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
  must be in the environment before ``import ray``; we also pass the address),
  keeps its session files in a temp dir it owns, has no dashboard, and keeps
  Ray's token authentication on (``RAY_AUTH_MODE=token``).
* It leaves out the Ray processes nothing here uses (:data:`LEAN_NODE_ARGS`,
  :func:`without_api_server`): starting them was about half of Ray's start-up CPU.
* We never run ``ray stop`` (it kills every Ray process on the
  machine): a Ray started in-process is stopped by ``ray.shutdown()`` and killing
  the processes of the head node we started, a head started with
  ``ray start --block`` by signalling the pid we started.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sn40l_emu.cluster.bytecode import compile_package

SOCKET_RESOURCE = "sn40l_socket"
NAMESPACE = "sn40l-emu"
LOOPBACK = "127.0.0.1"


REPORTER_UPDATE_INTERVAL_MS = "60000"


def safe_ray_env(bind_address: str = LOOPBACK) -> dict[str, str]:
    """Environment for Ray processes we start (and for this process before importing ray)."""
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        # The dashboard agent's reporter samples every process of its node each 5 s for the
        # dashboard and Prometheus, neither of which runs here; once a minute is enough.
        "REPORTER_UPDATE_INTERVAL_MS": REPORTER_UPDATE_INTERVAL_MS,
    }
    if bind_address in (LOOPBACK, "localhost"):
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def prepare_env(bind_address: str = LOOPBACK) -> None:
    """Before a driver starts or joins Ray: Ray's environment, its token, and our bytecode.

    The bytecode (:func:`compile_package`) is for the socket actors this machine will
    start: each imports the package, and without ``.pyc`` files recompiles it.
    """
    for k, v in safe_ray_env(bind_address).items():
        os.environ.setdefault(k, v)
    _ensure_token()
    compile_package()


def _ensure_token() -> None:
    """Token auth needs a token; generate one in Ray's default place if none exists."""
    token = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or token.exists():
        return
    from ray._private.authentication.authentication_token_setup import generate_and_save_token

    generate_and_save_token()


OPEN_ADDRESSES = ("0.0.0.0", "::", "[::]", "*")
OPEN_WARNING = ("binding Ray to all interfaces: an open Ray cluster runs any code it is sent; "
                "keep token authentication on and firewall the ports")


def is_open(bind_address: str) -> bool:
    return bind_address.strip() in OPEN_ADDRESSES


def check_bind(bind_address: str, allow_open: bool = False) -> None:
    """Refuse an all-interfaces bind unless the caller said so explicitly (then warn)."""
    from sn40l_emu.errors import ConfigError

    if not bind_address.strip():
        raise ConfigError("bind", bind_address, "an IP address of this machine (default 127.0.0.1)")
    if is_open(bind_address) and not allow_open:
        raise ConfigError("bind", bind_address,
                          "one address of this machine (default 127.0.0.1); all interfaces only with "
                          "--allow-open, since an open Ray cluster runs any code it is sent")


def warn_if_open(bind_address: str) -> None:
    if is_open(bind_address):
        warnings.warn(OPEN_WARNING, stacklevel=2)


@dataclass
class LocalRay:
    """A private local Ray this process started; ``shutdown()`` stops exactly it.

    ``node`` is the head we started (its processes are stopped here, since the
    driver only connected to it); ``None`` when ``ray.init`` itself started Ray.
    """

    temp_dir: str
    started: bool = True
    node: Any = None

    def shutdown(self) -> None:
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()
        if self.node is not None:
            self.node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            self.node = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# Ray processes a node the emulator starts leaves out, as ``RayParams`` fields (what
# ``ray.cluster_utils.Cluster`` passes on: use these as ``head_node_args``). Each costs
# about 1 CPU-s to start on this 2-core host and nothing here reads what it produces
# (``bench/bringup_wall.py``, README "Emulator speed"):
# * ``no_monitor``: the autoscaler monitor. Nothing autoscales; lost nodes are found
#   by the GCS's own health checks of each raylet, not by the monitor.
# * ``include_log_monitor=False``: it streams worker stdout/stderr to drivers; ours
#   connect with ``log_to_driver=False``. Worker logs still go to the session dir.
# * ``include_dashboard=False``: no dashboard modules; the API server process that Ray
#   still starts for usage stats is left out by :func:`without_api_server`.
# The GCS, raylet and the raylet's two agents (dashboard agent, runtime-env agent)
# stay: the raylet does not run without its agents. Token authentication and the
# 127.0.0.1 bind are set elsewhere and unchanged.
LEAN_NODE_ARGS: dict[str, Any] = {"include_dashboard": False, "no_monitor": True, "include_log_monitor": False}

# Ray system config for a head the emulator starts (pass as ``_system_config``, merged
# with any other keys): no metrics recording and export in the GCS, raylets and workers.
# Nothing scrapes them (no Prometheus, no dashboard); over 30 s of programs on 8 socket
# actors it cut the dashboard agent's CPU from 0.52 to 0.16 s (one run each; README "Emulator speed").
LEAN_SYSTEM_CONFIG: dict[str, Any] = {"enable_metrics_collection": False}


@contextmanager
def without_api_server() -> Iterator[None]:
    """Ray heads started inside this block get no API server (``dashboard.py``).

    With ``include_dashboard=False`` Ray still starts that process, loading only its
    usage-stats module, and usage stats are off here (``RAY_USAGE_STATS_ENABLED=0``),
    so it does nothing but cost about 2 CPU-s and hold up ``ray.init`` until it has
    written its address. Ray already runs on without it when it fails to start
    (``raise_on_failure`` is false with ``include_dashboard=False``); the state API and
    job submission are absent either way (their modules are not loaded). If a Ray
    version has no such method, nothing is patched and the process starts as before.
    """
    from ray._private import node as ray_node

    original = getattr(ray_node.Node, "start_api_server", None)
    if original is None:  # another Ray version: nothing to leave out, the head starts as Ray starts it
        yield
        return

    def skip(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    ray_node.Node.start_api_server = skip  # type: ignore[method-assign]
    try:
        yield
    finally:
        ray_node.Node.start_api_server = original  # type: ignore[method-assign]


@contextmanager
def lean_head(node_args: dict[str, Any], system_config: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Arguments for a head node as the emulator starts its own, valid inside this block.

    ``node_args`` plus :data:`LEAN_NODE_ARGS`, and ``_system_config`` as
    :data:`LEAN_SYSTEM_CONFIG` merged with ``system_config``; the block is
    :func:`without_api_server`, so a head started in it (``RayParams``, or a
    ``ray.cluster_utils.Cluster`` head in benches and tests) leaves out the same processes.
    """
    with without_api_server():
        yield {**node_args, **LEAN_NODE_ARGS, "_system_config": {**LEAN_SYSTEM_CONFIG, **(system_config or {})}}


# Ray waits a fixed 30 s for its raylet to register; on a loaded 2-core machine that is
# sometimes not enough. A failed start leaves nothing behind after ray.shutdown(), so try again.
START_ATTEMPTS = 3


def _start_head(temp_dir: str, num_cpus: int, sockets: int) -> Any:
    """Start a head node on 127.0.0.1 without the processes in :data:`LEAN_NODE_ARGS`.

    Started the way ``ray.cluster_utils.Cluster`` starts its head (``ray.init`` has no
    parameters for them); the driver then joins it with ``ray.init(address=...)``.
    """
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    with lean_head({"node_ip_address": LOOPBACK, "num_cpus": num_cpus, "resources": {SOCKET_RESOURCE: sockets},
                    "temp_dir": temp_dir}) as head_args:
        return Node(RayParams(**head_args), head=True, shutdown_at_exit=False, spawn_reaper=True)


def start_local_ray(num_cpus: int = 2, sockets: int = 16, *, log_to_driver: bool = False) -> LocalRay:
    """Start a private local Ray on 127.0.0.1 that advertises ``sockets`` socket slots."""
    prepare_env()
    import ray

    if ray.is_initialized():
        return LocalRay(temp_dir="", started=False)
    for attempt in range(START_ATTEMPTS):
        temp_dir = tempfile.mkdtemp(prefix="sn40l-ray-")
        node = None
        try:
            node = _start_head(temp_dir, num_cpus, sockets)
            ray.init(address=node.address, namespace=NAMESPACE, log_to_driver=log_to_driver,
                     configure_logging=True, logging_level=logging.WARNING)
        except Exception as exc:  # Ray raises a bare Exception when its raylet is slow to register
            if ray.is_initialized():
                ray.shutdown()
            if node is not None:
                node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            for pid in _pids_using(temp_dir):  # the half-started GCS and raylet: ours, stopped by pid
                stop_pid(pid, 5.0)
            shutil.rmtree(temp_dir, ignore_errors=True)
            if attempt + 1 == START_ATTEMPTS or "timed out during startup" not in str(exc):
                raise
            continue
        return LocalRay(temp_dir=temp_dir, node=node)
    raise AssertionError("unreachable")  # pragma: no cover


def _pids_using(temp_dir: str) -> list[int]:
    """Processes whose command line names ``temp_dir``: the Ray processes one ``ray.init`` of ours started."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmd:
            out.append(int(entry.name))
    return out


def connect(address: str) -> None:
    """Join an existing cluster (``auto`` or host:port) as a driver."""
    prepare_env()
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)


@dataclass
class HeadProcess:
    """A ``ray start --head --block`` process we launched; we stop it by its pid only."""

    pid: int
    address: str
    temp_dir: str
    extra_pids: list[int] = field(default_factory=list)

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_pid(self.pid, timeout_s)
        for pid in self.extra_pids:
            stop_pid(pid, timeout_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def start_ray_process(*, head: bool, address: str = "", bind_address: str = LOOPBACK,
                      num_cpus: int = 2, sockets: int = 8, port: int = 0,
                      temp_dir: str | None = None, extra_env: dict[str, str] | None = None,
                      wrap: list[str] | None = None, timeout_s: float = 60.0,
                      allow_open: bool = False) -> HeadProcess:
    """Launch ``ray start --block`` (a head, or a worker joining ``address``) in its own session.

    ``wrap`` prefixes the command (e.g. ``["ip", "netns", "exec", NS]``). Returns once
    the head has written its address (or the worker's raylet is up). Every node
    keeps its session files under its own ``temp_dir``; 0.0.0.0 needs ``allow_open``.
    """
    check_bind(bind_address, allow_open)
    warn_if_open(bind_address)
    compile_package()  # this node's socket actors import this machine's copy of the package
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="sn40l-ray-")
    cmd = [_ray_cli(), "start", "--block", "--node-ip-address", bind_address,
           "--num-cpus", str(num_cpus), "--resources", f'{{"{SOCKET_RESOURCE}": {sockets}}}',
           "--disable-usage-stats"]
    cmd += ["--temp-dir", temp_dir]
    if head:  # without the autoscaler monitor and log monitor (see LEAN_NODE_ARGS)
        cmd += ["--head", "--port", str(port), "--include-dashboard=false", "--no-monitor",
                "--include-log-monitor=false"]
    else:
        cmd += ["--address", address]
    env = {**os.environ, **safe_ray_env(bind_address), **(extra_env or {})}
    if not head:  # Ray refuses to join a worker while this is 0; the bind stays --node-ip-address
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    log = open(Path(temp_dir) / "ray-start.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen((wrap or []) + cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    marker = Path(temp_dir) / "ray_current_cluster"
    deadline = time.monotonic() + timeout_s  # wall-clock ok: waiting for a process we started
    while time.monotonic() < deadline:  # wall-clock ok
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see {log.name}")
        if head and marker.exists() and marker.read_text().strip():
            return HeadProcess(proc.pid, marker.read_text().strip(), temp_dir)
        if not head and b"Ray runtime started" in Path(log.name).read_bytes():
            return HeadProcess(proc.pid, address, temp_dir)
        time.sleep(0.2)  # wall-clock ok
    stop_pid(proc.pid)
    raise TimeoutError(f"ray start did not come up in {timeout_s:.0f} s; see {log.name}")


def stop_pid(pid: int, timeout_s: float = 5.0) -> None:
    """Stop a ``ray start --block`` we launched in its own session, and everything in that session.

    SIGTERM goes to the whole session at once (Ray's processes shut down in parallel);
    what still runs after ``timeout_s`` gets SIGKILL. Zombies count as stopped (a
    container's init may never reap them), so this never waits on the dead.
    """
    from sn40l_emu.cluster.netcheck import process_tree, running, session_of

    if session_of(pid) not in (pid, None):
        return  # the pid no longer leads the session we created: it is someone else's now

    def members() -> set[int]:
        return running(process_tree([pid], sessions=[pid]))

    left = members()
    if not left:
        _reap(pid)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (timeout_s if sig == signal.SIGTERM else 5.0)  # wall-clock ok
        while left and time.monotonic() < deadline:  # wall-clock ok
            _reap(pid)
            time.sleep(0.1)  # wall-clock ok
            left = members()
            if sig == signal.SIGKILL:  # a member may have forked during the grace period
                for p in left:
                    try:
                        os.kill(p, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
        if not left:
            break
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
