"""Scenario files: a profile, a workload, and timed events — validated once, clear errors.

```yaml
name: one link at 10 %
profile: sn40l                # a shipped name or a path
set: [p2p.link_latency_us=2]  # optional profile overrides
backend: local                # ray (default) or local
workload: {kind: coe, experts: 50, batch: 8, tokens: 20, batches: 4}
events:
  - {at: 5ms, kind: link_degrade, src: 0, dst: 1, bw_factor: 0.1, extra_latency: 2us}
  - {after_requests: 16, kind: kill_socket, socket: 3, mode: process}
```
Every error names the event (its index and kind) and the field, with what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sn40l_emu import units, yaml_load
from sn40l_emu.errors import ConfigError


class EventKind(str, Enum):
    KILL_SOCKET = "kill_socket"
    RESTART_SOCKET = "restart_socket"
    LINK_DOWN = "link_down"
    LINK_UP = "link_up"
    LINK_DEGRADE = "link_degrade"
    DDR_THROTTLE = "ddr_throttle"
    HBM_THROTTLE = "hbm_throttle"
    HOST_LINK_DEGRADE = "host_link_degrade"
    STRAGGLER = "straggler"


class KillMode(str, Enum):
    VIRTUAL = "virtual"  # the model declares the socket dead at that instant
    PROCESS = "process"  # the socket's Ray actor process is really killed (SIGKILL)


class WorkloadKind(str, Enum):
    COE = "coe"
    ALLREDUCE = "allreduce"


# per kind: field -> (type tag, required, default)
_F = tuple[str, bool, Any]
_FIELDS: dict[EventKind, dict[str, _F]] = {
    EventKind.KILL_SOCKET: {"socket": ("socket", True, None), "mode": ("mode", False, "virtual"),
                            "restart": ("bool", False, True)},
    EventKind.RESTART_SOCKET: {"socket": ("socket", True, None)},
    EventKind.LINK_DOWN: {"src": ("socket", True, None), "dst": ("socket", True, None),
                          "both_ways": ("bool", False, True)},
    EventKind.LINK_UP: {"src": ("socket", True, None), "dst": ("socket", True, None),
                        "both_ways": ("bool", False, True)},
    EventKind.LINK_DEGRADE: {"src": ("socket", True, None), "dst": ("socket", True, None),
                             "bw_factor": ("factor", False, 1.0), "extra_latency": ("time", False, 0),
                             "both_ways": ("bool", False, False)},
    EventKind.DDR_THROTTLE: {"socket": ("sockets", False, "all"), "factor": ("factor", True, None)},
    EventKind.HBM_THROTTLE: {"socket": ("sockets", False, "all"), "factor": ("factor", True, None)},
    EventKind.HOST_LINK_DEGRADE: {"socket": ("sockets", False, "all"), "factor": ("factor", True, None)},
    EventKind.STRAGGLER: {"socket": ("sockets", True, None), "compute_factor": ("factor", True, None)},
}


@dataclass(frozen=True)
class Event:
    index: int
    kind: EventKind
    at_ns: int | None  # trigger: virtual time ...
    after_requests: int | None  # ... or after this many requests have finished
    params: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.params)[key]

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v.value if isinstance(v, Enum) else v}" for k, v in self.params)
        when = f"at {units.fmt_ns(self.at_ns)}" if self.at_ns is not None else f"after {self.after_requests} requests"
        return f"#{self.index} {self.kind.value}({args}) {when}"


@dataclass(frozen=True)
class WorkloadSpec:
    kind: WorkloadKind
    model: str = "llama2-7b"
    experts: int = 50
    batch: int = 8
    tokens: int = 20
    prompt_len: int = 128
    batches: int = 4
    workload: str = "zipf:1.0"
    policy: str = "lru"
    seed: int = 0
    size_bytes: int = 64 * units.MiB  # allreduce
    repeats: int = 8  # allreduce
    algo: str = "ring"
    chunks: int = 8
    sockets: int = 8


@dataclass(frozen=True)
class Scenario:
    name: str
    profile: str
    overrides: tuple[str, ...]
    backend: str
    workload: WorkloadSpec
    events: tuple[Event, ...] = field(default_factory=tuple)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("scenario", str(path), "a path to a scenario YAML file")
    return parse_scenario(yaml_load.load_yaml_mapping(p, "scenario"), p.stem)


def parse_scenario(raw: Any, default_name: str = "scenario") -> Scenario:
    if not isinstance(raw, dict):
        raise ConfigError("scenario", raw, "a mapping with profile, workload, events")
    known = {"name", "profile", "set", "backend", "workload", "events", "description"}
    for k in raw:
        if k not in known:
            raise ConfigError(str(k), raw[k], "one of the top-level keys: " + ", ".join(sorted(known)))
    overrides = raw.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("set", overrides, "a list of SECTION.FIELD=VALUE strings")
    backend = raw.get("backend", "ray")
    if backend not in ("ray", "local"):
        raise ConfigError("backend", backend, "'ray' or 'local'")
    wl = _workload(raw.get("workload", {"kind": "coe"}))
    events_raw = raw.get("events", [])
    if not isinstance(events_raw, list):
        raise ConfigError("events", events_raw, "a list of events")
    n_sockets = wl.sockets if wl.kind is WorkloadKind.ALLREDUCE else 8
    events = tuple(_event(i, e, n_sockets) for i, e in enumerate(events_raw))
    return Scenario(str(raw.get("name", default_name)), str(raw.get("profile", "sn40l")), tuple(overrides),
                    backend, wl, events)


def _workload(raw: Any) -> WorkloadSpec:
    if not isinstance(raw, dict):
        raise ConfigError("workload", raw, "a mapping with kind: coe|allreduce and its fields")
    try:
        kind = WorkloadKind(raw.get("kind", "coe"))
    except ValueError:
        raise ConfigError("workload.kind", raw.get("kind"), "coe or allreduce") from None
    fields = {f for f in WorkloadSpec.__dataclass_fields__ if f != "kind"}
    kwargs: dict[str, Any] = {"kind": kind}
    for k, v in raw.items():
        if k == "kind":
            continue
        if k not in fields:
            raise ConfigError(f"workload.{k}", v, "one of " + ", ".join(sorted(fields)))
        default = getattr(WorkloadSpec, k)
        if k == "size_bytes":
            try:
                v = units.parse_size_bytes(v)
            except (ValueError, TypeError):
                raise ConfigError("workload.size_bytes", v, "a size like '64 MiB'") from None
        if isinstance(default, int) and (not isinstance(v, int) or isinstance(v, bool)
                                         or not 0 < v <= units.MAX_SIZE_BYTES):
            raise ConfigError(f"workload.{k}", v, f"a positive integer <= {units.MAX_SIZE_BYTES}")
        if isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"workload.{k}", v, "a string")
        kwargs[k] = v
    return WorkloadSpec(**kwargs)


def _event(i: int, raw: Any, n_sockets: int) -> Event:
    where = f"events[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a mapping with kind, at or after_requests, and the kind's fields")
    kind_raw = raw.get("kind")
    try:
        kind = EventKind(kind_raw)
    except ValueError:
        raise ConfigError(f"{where}.kind", kind_raw, "one of " + ", ".join(k.value for k in EventKind)) from None
    where = f"events[{i}] ({kind.value})"
    at_ns: int | None = None
    after: int | None = None
    if "at" in raw and "after_requests" in raw:
        raise ConfigError(f"{where}.at", raw["at"], "either 'at' or 'after_requests', not both")
    if "at" in raw:
        try:
            at_ns = units.parse_time_ns(raw["at"])
        except (ValueError, TypeError):
            raise ConfigError(f"{where}.at", raw["at"],
                              f"a virtual time >= 0 and <= {units.MAX_TIME_NS} ns, like '5ms', '250us' or 0") from None
        if at_ns < 0:
            raise ConfigError(f"{where}.at", raw["at"], "a time >= 0")
    elif "after_requests" in raw:
        after = raw["after_requests"]
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= _MAX_REQUESTS:
            raise ConfigError(f"{where}.after_requests", after, f"an integer >= 0 and <= {_MAX_REQUESTS}")
    else:
        at_ns = 0
    spec = _FIELDS[kind]
    for k in raw:
        if k not in spec and k not in ("kind", "at", "after_requests"):
            raise ConfigError(f"{where}.{k}", raw[k], "one of " + ", ".join(["at", "after_requests", *spec]))
    params: list[tuple[str, Any]] = []
    for k, (tag, required, default) in spec.items():
        if k not in raw:
            if required:
                raise ConfigError(f"{where}.{k}", "<missing>", _allowed(tag, n_sockets))
            params.append((k, _value(f"{where}.{k}", default, tag, n_sockets)))
            continue
        params.append((k, _value(f"{where}.{k}", raw[k], tag, n_sockets)))
    ev = Event(i, kind, at_ns, after, tuple(params))
    if kind in (EventKind.LINK_DOWN, EventKind.LINK_UP, EventKind.LINK_DEGRADE) and ev.get("src") == ev.get("dst"):
        raise ConfigError(f"{where}.dst", ev.get("dst"), "a socket other than src")
    return ev


_MAX_FACTOR = 1e6  # a slow-down or speed-up beyond a million is a typo, not a fault model
_MAX_REQUESTS = 10**9


def _allowed(tag: str, n: int) -> str:
    return {
        "socket": f"a socket index 0..{n - 1}",
        "sockets": f"a socket index 0..{n - 1}, a list of them, or 'all'",
        "factor": f"a finite number > 0 and <= {_MAX_FACTOR:g} (1.0 = unchanged, 0.5 = half speed)",
        "time": f"a duration >= 0 and <= {units.MAX_TIME_NS} ns, like '2us'",
        "bool": "true or false",
        "mode": "virtual or process",
    }[tag]


def _value(where: str, v: Any, tag: str, n: int) -> Any:
    if tag == "socket":
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
            raise ConfigError(where, v, _allowed(tag, n))
        return v
    if tag == "sockets":
        if v == "all":
            return tuple(range(n))
        vals = v if isinstance(v, list) else [v]
        if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < n for x in vals):
            raise ConfigError(where, v, _allowed(tag, n))
        return tuple(vals)
    if tag == "factor":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= _MAX_FACTOR:
            raise ConfigError(where, v, _allowed(tag, n))  # also refuses nan and inf
        return float(v)
    if tag == "time":
        try:
            t = units.parse_time_ns(v)
        except (ValueError, TypeError):
            raise ConfigError(where, v, _allowed(tag, n)) from None
        if t < 0:
            raise ConfigError(where, v, _allowed(tag, n))
        return t
    if tag == "bool":
        if not isinstance(v, bool):
            raise ConfigError(where, v, _allowed(tag, n))
        return v
    if tag == "mode":
        try:
            return KillMode(v)
        except ValueError:
            raise ConfigError(where, v, _allowed(tag, n)) from None
    raise AssertionError(tag)
