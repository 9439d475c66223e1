"""Detached, named nodes that outlive a command: ``sn40l-emu up`` / ``status`` / ``down``.

A small JSON state file per node name (under ``$SN40L_EMU_STATE_DIR``, default
``~/.sn40l-emu``) remembers the Ray address, the profile and — when ``up``
started the Ray head itself — the pid of that ``ray start --block`` process,
so ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sn40l_emu.cluster.bringup import LOOPBACK, NAMESPACE, connect, start_ray_process, stop_pid
from sn40l_emu.config import load_profile
from sn40l_emu.errors import ConfigError, EmuError

DEFAULT_NAME = "sn40l"


def state_dir() -> Path:
    return Path(os.environ.get("SN40L_EMU_STATE_DIR", Path.home() / ".sn40l-emu"))


@dataclass
class NodeState:
    name: str
    address: str
    profile: str
    overrides: list[str]
    n_sockets: int
    head_pid: int = 0  # 0: the Ray cluster was there before `up`
    head_temp_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.name}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def load(name: str) -> NodeState | None:
        p = state_dir() / f"{name}.json"
        if not p.exists():
            return None
        return NodeState(**json.loads(p.read_text()))


def up(name: str = DEFAULT_NAME, *, address: str = "", profile: str = "sn40l",
       overrides: list[str] | None = None, n_sockets: int | None = None,
       bind_address: str = LOOPBACK, num_cpus: int = 2, placement: str = "pack",
       allow_open: bool = False) -> NodeState:
    """Create a detached named node; start a local head on 127.0.0.1 when no address is given.

    ``placement`` is ``pack``, ``spread`` or ``map:FILE.json`` (see :mod:`sn40l_emu.cluster.placement`);
    a head bound to all interfaces (0.0.0.0) needs ``allow_open``.
    """
    from sn40l_emu.cluster.bringup import check_bind
    from sn40l_emu.cluster.placement import parse_placement
    from sn40l_emu.cluster.ray_node import create_node

    check_bind(bind_address, allow_open)
    if NodeState.load(name) is not None:
        raise EmuError(f"a node named {name!r} is already up; run `sn40l-emu down --name {name}` first")
    prof = load_profile(profile, overrides or [])
    n = n_sockets or prof.sockets
    if n < 1 or (n > prof.sockets and n % prof.sockets):
        raise ConfigError("sockets", n, f"1..{prof.sockets} (one node) or a multiple of {prof.sockets} "
                          "(several nodes joined by the profile's scale-out link)")
    spec = parse_placement(placement, n)
    head = None
    if not address:
        head = start_ray_process(head=True, bind_address=bind_address, num_cpus=num_cpus, sockets=n,
                                 allow_open=allow_open)
        address = head.address
    state = NodeState(name, address, profile, list(overrides or []), n,
                      head.pid if head else 0, head.temp_dir if head else "",
                      extra={"placement": spec.text})
    try:
        connect(address)
        create_node(prof, spec, n_sockets=n, name=name, detached=True)
        state.save()
    except BaseException:
        if head is not None:
            head.stop()
        raise
    finally:
        import ray

        ray.shutdown()
    return state


def attach(name: str = DEFAULT_NAME) -> Any:
    """A :class:`RayNode` handle on a node that is up (the caller's Ray joins its cluster)."""
    from sn40l_emu.cluster.ray_node import RayNode

    state = NodeState.load(name)
    if state is None:
        raise EmuError(f"no node named {name!r} is up (start one with `sn40l-emu up --name {name}`)")
    connect(state.address)
    return RayNode.attach(load_profile(state.profile, state.overrides), name, state.n_sockets)


def status(name: str = DEFAULT_NAME) -> dict[str, Any]:
    import ray

    node = attach(name)
    try:
        sockets = [{"index": s["index"], "ray_node": s["ray_node"], "clock_ns": s["clock_ns"],
                    "tiers": s["tiers"], "pid": s["pid"]} for s in node.status()]
    finally:
        ray.shutdown()
    state = NodeState.load(name)
    assert state is not None
    return {"name": name, "address": state.address, "profile": state.profile, "sockets": sockets}


def down(name: str = DEFAULT_NAME) -> NodeState:
    """Kill the node's actors and placement group; stop the Ray head if `up` started it."""
    import ray

    from sn40l_emu.cluster.placement import actor_name

    state = NodeState.load(name)
    if state is None:
        raise EmuError(f"no node named {name!r} is up")
    try:
        connect(state.address)
        for i in range(state.n_sockets):
            try:
                ray.kill(ray.get_actor(actor_name(name, i), namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass  # already gone
        try:
            from ray.util.placement_group import get_placement_group, remove_placement_group

            remove_placement_group(get_placement_group(f"{name}:pg"))
        except Exception:
            pass
    except Exception:
        if not state.head_pid:
            raise
    finally:
        ray.shutdown()
        if state.head_pid:
            stop_pid(state.head_pid)
            import shutil

            shutil.rmtree(state.head_temp_dir, ignore_errors=True)
        state.path.unlink(missing_ok=True)
    return state
