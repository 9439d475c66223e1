"""Where a node's sockets live: PACK, SPREAD, or an explicit socket -> machine map.

The CLI names a placement as ``pack``, ``spread`` or ``map:FILE.json``. A map
file says, for every socket, which Ray node hosts it, by Ray node id or by the
machine's IP address (the address its raylet advertises)::

    {"0-7": "10.0.0.1", "8-15": "10.0.0.2"}      # ranges of sockets -> machine
    {"0": "10.0.0.1", "1": "10.0.0.2", ...}       # one socket per key
    ["10.0.0.1", "10.0.0.1", "10.0.0.2", ...]     # socket i -> entry i

Every socket from 0 to n-1 must be named exactly once. Capacity is checked
before any actor is created: a Ray node hosts as many sockets as the
``sn40l_socket`` resource it advertises (``deploy/start-*.sh --sockets N``),
so a placement that cannot fit fails at once with :class:`NoCapacityError`
instead of waiting for Ray to find room that will never come.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sn40l_emu.cluster.bringup import SOCKET_RESOURCE
from sn40l_emu.errors import ConfigError, NoCapacityError
from sn40l_emu.yaml_load import load_json_file


class Placement(str, Enum):
    """How a node's sockets are spread over the Ray nodes of a cluster."""
    PACK = "pack"
    SPREAD = "spread"


def actor_name(node_name: str, index: int) -> str:
    """The Ray actor name of socket ``index`` of the emulated node ``node_name``."""
    return f"{node_name}:socket{index}"


PLACEMENT_HELP = "pack | spread | map:FILE.json (socket -> Ray node id or machine IP)"


@dataclass(frozen=True)
class PlacementSpec:
    """A parsed ``--placement``: a strategy, or per-socket machine names (``kind`` is then None)."""

    kind: Placement | None
    socket_map: tuple[str, ...] = ()
    source: str = ""

    @property
    def text(self) -> str:
        return self.source or (self.kind.value if self.kind else "map")


def parse_placement(text: str, n_sockets: int) -> PlacementSpec:
    """``pack`` / ``spread`` / ``map:FILE.json`` -> a :class:`PlacementSpec` (ConfigError otherwise)."""
    t = text.strip()
    if t.lower() in (p.value for p in Placement):
        return PlacementSpec(Placement(t.lower()), source=t.lower())
    if t.lower().startswith("map:"):
        path = Path(t[4:]).expanduser()
        try:
            data = load_json_file(path, "placement")
        except ConfigError as exc:
            allowed = exc.allowed.replace("a readable file", "a readable JSON map file")
            raise ConfigError("placement", text, allowed) from None
        return PlacementSpec(None, socket_map_from_json(data, n_sockets), source=t)
    raise ConfigError("placement", text, PLACEMENT_HELP)


def socket_map_from_json(data: Any, n_sockets: int) -> tuple[str, ...]:
    """A list (socket i -> entry i) or an object whose keys are sockets or ``a-b`` ranges."""
    if isinstance(data, list):
        if len(data) != n_sockets or not all(isinstance(v, str) and v for v in data):
            raise ConfigError("placement map", data, f"a list of {n_sockets} non-empty strings")
        return tuple(data)
    if not isinstance(data, Mapping):
        raise ConfigError("placement map", data, "a JSON list or object")
    out: dict[int, str] = {}
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"placement map[{key}]", value, "a Ray node id or a machine IP")
        for s in _socket_range(str(key), n_sockets):
            if s in out:
                raise ConfigError(f"placement map[{key}]", s, "each socket named once")
            out[s] = value
    missing = [s for s in range(n_sockets) if s not in out]
    if missing:
        raise ConfigError("placement map", sorted(out), f"every socket 0..{n_sockets - 1}; missing {missing}")
    return tuple(out[s] for s in range(n_sockets))


def _socket_range(key: str, n_sockets: int) -> range:
    lo, sep, hi = key.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise ConfigError(f"placement map[{key}]", key, "a socket index or a range like 0-7") from None
    if not 0 <= a <= b < n_sockets:
        raise ConfigError(f"placement map[{key}]", key, f"sockets within 0..{n_sockets - 1}")
    return range(a, b + 1)


# ---- against a live cluster (Ray initialised) ------------------------------------
def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def free_sockets_per_node() -> dict[str, int]:
    """Free ``sn40l_socket`` slots per alive Ray node id (0 where a node advertises none)."""
    import ray

    alive = {n["NodeID"] for n in alive_nodes()}
    try:
        from ray._private.state import available_resources_per_node

        avail = available_resources_per_node()
    except Exception:  # pragma: no cover - developer API moved: fall back to totals
        return {n["NodeID"]: int(n["Resources"].get(SOCKET_RESOURCE, 0)) for n in ray.nodes() if n.get("Alive")}
    return {nid: int(avail.get(nid, {}).get(SOCKET_RESOURCE, 0)) for nid in alive}


def resolve_node_ids(socket_map: Sequence[str], nodes: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """Per socket, the Ray node id its entry names (a node id, or the IP of exactly one alive node)."""
    nodes = list(alive_nodes() if nodes is None else nodes)
    by_id = {n["NodeID"]: n["NodeID"] for n in nodes}
    by_ip: dict[str, list[str]] = {}
    for n in nodes:
        by_ip.setdefault(n["NodeManagerAddress"], []).append(n["NodeID"])
    known = ", ".join(f"{n['NodeID'][:12]}@{n['NodeManagerAddress']}" for n in nodes)
    out = []
    for i, name in enumerate(socket_map):
        if name in by_id:
            out.append(by_id[name])
            continue
        ids = by_ip.get(name, [])
        if len(ids) != 1:
            why = "several Ray nodes share that IP; name one by node id" if ids else "no alive Ray node has it"
            raise ConfigError(f"placement map socket {i}", name,
                              f"a Ray node id or the IP of exactly one alive Ray node ({why}); alive: {known}")
        out.append(ids[0])
    return out


def total_sockets_per_node() -> dict[str, int]:
    """All ``sn40l_socket`` slots per alive Ray node id, free or held."""
    return {n["NodeID"]: int(n["Resources"].get(SOCKET_RESOURCE, 0)) for n in alive_nodes()}


def check_capacity(n_sockets: int, node_ids: Sequence[str] | None = None,
                   free: Mapping[str, int] | None = None, *, wait_s: float = 0.0) -> None:
    """Raise :class:`NoCapacityError` when the sockets cannot all get a ``sn40l_socket`` slot.

    Why ``wait_s``: Ray releases an actor's resources a moment after the actor is
    killed, later still on a loaded machine, so a node built right after another
    was removed can find slots still held. When the cluster *has* enough slots in
    total but not enough are free yet, wait up to ``wait_s`` seconds for them to be
    released (polling), then fail with the same clear error.
    """
    import time

    deadline = time.monotonic() + wait_s  # wall-clock ok: waiting on Ray, not a model
    while True:
        try:
            _check_free(n_sockets, node_ids, dict(free_sockets_per_node() if free is None else free))
            return
        except NoCapacityError:
            if free is not None or time.monotonic() >= deadline:  # wall-clock ok
                raise
            try:
                _check_free(n_sockets, node_ids, total_sockets_per_node())
            except NoCapacityError:
                raise  # not enough slots even when every one is released: waiting cannot help
            time.sleep(0.25)  # wall-clock ok


def _check_free(n_sockets: int, node_ids: Sequence[str] | None, free: Mapping[str, int]) -> None:
    total = sum(free.values())
    where = ", ".join(f"{nid[:12]}: {k}" for nid, k in sorted(free.items())) or "no alive Ray node"
    if node_ids is None:
        if total < n_sockets:
            raise NoCapacityError(n_sockets, total, f"free per Ray node: {where}")
        return
    short = {nid: k for nid, k in Counter(node_ids).items() if free.get(nid, 0) < k}
    if short:
        need = ", ".join(f"{nid[:12]} needs {k} has {free.get(nid, 0)}" for nid, k in sorted(short.items()))
        raise NoCapacityError(sum(short.values()), sum(free.get(nid, 0) for nid in short), need)


def node_ids_for(spec: PlacementSpec) -> list[str] | None:
    """The explicit per-socket Ray node ids of a map placement (None for PACK / SPREAD)."""
    return resolve_node_ids(spec.socket_map) if spec.kind is None else None
