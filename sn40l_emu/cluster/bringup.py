"""Starting and joining Ray with safe defaults.

* A Ray the emulator starts binds to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
  must be in the environment before ``import ray``; we also pass the address),
  keeps its session files in a temp dir it owns, has no dashboard, and keeps
  Ray's token authentication on (``RAY_AUTH_MODE=token``).
* Nothing here ever runs ``ray stop`` (it kills every Ray process on the
  machine): a Ray started in-process is stopped with ``ray.shutdown()``, a head
  started with ``ray start --block`` by signalling the pid we started.
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
from dataclasses import dataclass, field
from pathlib import Path

SOCKET_RESOURCE = "sn40l_socket"
NAMESPACE = "sn40l-emu"
LOOPBACK = "127.0.0.1"


def safe_ray_env(bind_address: str = LOOPBACK) -> dict[str, str]:
    """Environment for Ray processes we start (and for this process before importing ray)."""
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
    }
    if bind_address in (LOOPBACK, "localhost"):
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def prepare_env(bind_address: str = LOOPBACK) -> None:
    for k, v in safe_ray_env(bind_address).items():
        os.environ.setdefault(k, v)
    _ensure_token()


def _ensure_token() -> None:
    """Token auth needs a token; generate one in Ray's default place if none exists."""
    token = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or token.exists():
        return
    from ray._private.authentication.authentication_token_setup import generate_and_save_token

    generate_and_save_token()


def warn_if_open(bind_address: str) -> None:
    if bind_address in ("0.0.0.0", "::"):
        warnings.warn(
            "binding Ray to all interfaces: an open Ray cluster runs any code it is sent; "
            "keep token authentication on and firewall the ports", stacklevel=2)


@dataclass
class LocalRay:
    """A Ray started inside this process by ``ray.init``; ``shutdown()`` stops exactly it."""

    temp_dir: str
    started: bool = True

    def shutdown(self) -> None:
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_local_ray(num_cpus: int = 2, sockets: int = 16, *, log_to_driver: bool = False) -> LocalRay:
    """Start a private local Ray on 127.0.0.1 that advertises ``sockets`` socket slots."""
    prepare_env()
    import ray

    if ray.is_initialized():
        return LocalRay(temp_dir="", started=False)
    temp_dir = tempfile.mkdtemp(prefix="sn40l-ray-")
    ray.init(
        num_cpus=num_cpus,
        resources={SOCKET_RESOURCE: sockets},
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address=LOOPBACK,
        namespace=NAMESPACE,
        log_to_driver=log_to_driver,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return LocalRay(temp_dir=temp_dir)


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

    def stop(self, timeout_s: float = 20.0) -> None:
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
                      wrap: list[str] | None = None, timeout_s: float = 60.0) -> HeadProcess:
    """Launch ``ray start --block`` (a head, or a worker joining ``address``) in its own session.

    ``wrap`` prefixes the command (e.g. ``["ip", "netns", "exec", NS]``). Returns once
    the head has written its address (or the worker's raylet is up).
    """
    warn_if_open(bind_address)
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="sn40l-ray-")
    cmd = [_ray_cli(), "start", "--block", "--node-ip-address", bind_address,
           "--num-cpus", str(num_cpus), "--resources", f'{{"{SOCKET_RESOURCE}": {sockets}}}',
           "--disable-usage-stats"]
    if head:
        cmd += ["--head", "--port", str(port), "--temp-dir", temp_dir, "--include-dashboard=false"]
    else:
        cmd += ["--address", address]
    env = {**os.environ, **safe_ray_env(bind_address), **(extra_env or {})}
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


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM a ``ray start --block`` we launched (it stops its children), then SIGKILL its group."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s  # wall-clock ok
    while time.monotonic() < deadline:  # wall-clock ok
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid if not _alive(pid) else 0
        if done:
            break
        time.sleep(0.1)  # wall-clock ok
    try:
        os.killpg(pid, signal.SIGKILL)  # the session we created for it
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
