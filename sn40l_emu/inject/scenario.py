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
Workloads: ``coe`` (batches), ``serve`` (Poisson arrivals: ``rate_per_s``,
``requests``), ``tp`` (``generations`` of one model over every socket),
``allreduce`` (``size_bytes``, ``repeats``, ``algo``, ``chunks``, ``sockets``).
An event is a typed dataclass per kind (:mod:`sn40l_emu.inject.events`) with
``at`` (a virtual time; it may fall inside a step) or ``after_requests``
(requests ended, completed or failed). Every error names the event (its
index and kind) and the field, with what is allowed. YAML is read in one
place, :func:`load_scenario`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sn40l_emu import units, yaml_load
from sn40l_emu.errors import ConfigError
from sn40l_emu.inject.events import EVENT_TYPES, EventKind, InjectEvent, KillMode, event_from_mapping

__all__ = ["EventKind", "KillMode", "Scenario", "Scheduled", "WorkloadKind", "WorkloadSpec", "load_scenario",
           "parse_scenario", "parse_when", "parse_workload"]


class WorkloadKind(str, Enum):
    COE = "coe"  # CoE batches (the coordinator)
    SERVE = "serve"  # CoE serving: Poisson arrivals through the FIFO batching queue
    TP = "tp"  # TP generations of one model over every socket
    ALLREDUCE = "allreduce"  # repeated all-reduces


@dataclass(frozen=True)
class Scheduled:
    """An event and when it fires: at virtual time ``at_ns`` (which may fall inside a step),
    or once ``after_requests`` requests have ended (completed or failed)."""

    index: int
    event: InjectEvent
    at_ns: int | None
    after_requests: int | None

    @property
    def kind(self) -> EventKind:
        return self.event.kind

    @property
    def label(self) -> str:
        when = f"at {units.fmt_ns(self.at_ns)}" if self.at_ns is not None else f"after {self.after_requests} requests"
        return f"#{self.index} {self.event.describe()} {when}"


#: The former name: a scheduled event.
Event = Scheduled


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
    rate_per_s: float = 20.0  # serve: Poisson arrival rate (virtual time)
    requests: int = 64  # serve: how many requests arrive
    generations: int = 4  # tp: how many generations run one after another
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
    events: tuple[Scheduled, ...] = field(default_factory=tuple)


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
    wl = parse_workload(raw.get("workload", {"kind": "coe"}))
    events_raw = raw.get("events", [])
    if not isinstance(events_raw, list):
        raise ConfigError("events", events_raw, "a list of events")
    n_sockets = wl.sockets if wl.kind is WorkloadKind.ALLREDUCE else 8
    events = tuple(_event(i, e, n_sockets) for i, e in enumerate(events_raw))
    return Scenario(str(raw.get("name", default_name)), str(raw.get("profile", "sn40l")), tuple(overrides),
                    backend, wl, events)


def parse_workload(raw: Any) -> WorkloadSpec:
    """A workload mapping (``kind`` and its fields) checked into a :class:`WorkloadSpec`."""
    if not isinstance(raw, dict):
        raise ConfigError("workload", raw, "a mapping with kind: coe|serve|tp|allreduce and its fields")
    try:
        kind = WorkloadKind(raw.get("kind", "coe"))
    except ValueError:
        raise ConfigError("workload.kind", raw.get("kind"), ", ".join(k.value for k in WorkloadKind)) from None
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
            except (ValueError, TypeError, OverflowError):
                raise ConfigError("workload.size_bytes", v, "a size like '64 MiB'") from None
        if isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < float("inf"):
                raise ConfigError(f"workload.{k}", v, "a finite number > 0")
            v = float(v)
        low = 0 if k == "seed" else 1
        if isinstance(default, int) and (not isinstance(v, int) or isinstance(v, bool)
                                         or not low <= v <= units.MAX_SIZE_BYTES):
            raise ConfigError(f"workload.{k}", v, ("an integer >= 0" if low == 0 else "a positive integer")
                              + f" <= {units.MAX_SIZE_BYTES}")
        if isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"workload.{k}", v, "a string")
        kwargs[k] = v
    return WorkloadSpec(**kwargs)


def _event(i: int, raw: Any, n_sockets: int) -> Scheduled:
    where = f"events[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a mapping with kind, at or after_requests, and the kind's fields")
    kind_raw = raw.get("kind")
    try:
        kind = EventKind(kind_raw)
    except ValueError:
        raise ConfigError(f"{where}.kind", kind_raw, "one of " + ", ".join(k.value for k in EVENT_TYPES)) from None
    where = f"events[{i}] ({kind.value})"
    at_ns, after = parse_when(where, raw.get("at"), raw.get("after_requests"), "at" in raw, "after_requests" in raw)
    return Scheduled(i, event_from_mapping(raw, where, n_sockets), at_ns, after)


def parse_when(where: str, at: Any, after: Any, has_at: bool = True, has_after: bool = True
               ) -> tuple[int | None, int | None]:
    """(at_ns, after_requests) of an event: exactly one is set; neither given means at 0."""
    has_at = has_at and at is not None
    has_after = has_after and after is not None
    if has_at and has_after:
        raise ConfigError(f"{where}.at", at, "either 'at' or 'after_requests', not both")
    if has_at:
        try:
            at_ns = units.parse_time_ns(at)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(f"{where}.at", at,
                              f"a virtual time >= 0 and <= {units.MAX_TIME_NS} ns, like '5ms', '250us' or 0") from None
        if at_ns < 0:
            raise ConfigError(f"{where}.at", at, "a time >= 0")
        return at_ns, None
    if has_after:
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_REQUESTS:
            raise ConfigError(f"{where}.after_requests", after, f"an integer >= 0 and <= {MAX_REQUESTS}")
        return None, after
    return 0, None


MAX_REQUESTS = 10**9
