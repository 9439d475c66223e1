"""Injectable events, one frozen dataclass per kind, each validating itself and saying its changes.

Used two ways, with the same classes:

- scenario files: :func:`event_from_mapping` builds one from a YAML mapping
  (``kind`` picks the class through :data:`EVENT_TYPES`);
- scripts: ``events.LinkDegrade(src=0, dst=1, bw_factor=0.1)`` (see
  :mod:`sn40l_emu.inject.plan`).

Each field declares its :class:`FieldKind` (how it is read and checked) in
its metadata, so reading and checking are written once for all kinds. An
event's :meth:`InjectEvent.changes` is pure: the typed state changes it makes
on the node from ``from_ns`` onward, relative to the healthy profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar

from sn40l_emu import units
from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import ConfigError
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.socket_actor.dma import Engine
from sn40l_emu.socket_actor.socket_model import host_rate_per_socket
from sn40l_emu.socket_actor.state_changes import (
    FailAt,
    LinkState,
    SetDegradation,
    SetEngineRate,
    SetLink,
    StateChange,
)

#: Per change: the sockets it goes to.
Targeted = list[tuple[list[int], StateChange]]


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


MAX_FACTOR = 1e6  # a slow-down or speed-up beyond a million is a typo, not a fault model


class FieldKind(Enum):
    """How a field is read from a scenario and checked."""

    SOCKET = "a socket index 0..{last}"
    SOCKETS = "a socket index 0..{last}, a list of them, or 'all'"
    FACTOR = "a finite number > 0 and <= {max_factor} (1.0 = unchanged, 0.5 = half speed)"
    TIME = "a duration >= 0 and <= {max_time} ns, like '2us'"
    BOOL = "true or false"
    MODE = "virtual or process"

    def allowed(self, n_sockets: int | None) -> str:
        last = "N-1" if n_sockets is None else str(n_sockets - 1)
        return self.value.format(last=last, max_factor=f"{MAX_FACTOR:g}", max_time=units.MAX_TIME_NS)


def _f(kind: FieldKind, *, yaml: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    meta = {"kind": kind, "yaml": yaml}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read(kind: FieldKind, where: str, v: Any, n: int | None) -> Any:
    """A field's value from a scenario (or a script), converted and checked; ConfigError if bad."""
    bad = ConfigError(where, v, kind.allowed(n))
    if kind is FieldKind.SOCKET:
        if not _is_int(v) or v < 0 or (n is not None and v >= n):
            raise bad
        return v
    if kind is FieldKind.SOCKETS:
        if v is None or v == "all":
            return None if n is None else tuple(range(n))
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if not vals or not all(_is_int(x) and x >= 0 and (n is None or x < n) for x in vals):
            raise bad
        return tuple(vals)
    if kind is FieldKind.FACTOR:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_FACTOR:
            raise bad  # also refuses nan and inf; compared before float() so a 400-digit int cannot overflow
        return float(v)
    if kind is FieldKind.TIME:
        try:
            t = units.parse_time_ns(v)
        except (ValueError, TypeError, OverflowError):
            raise bad from None
        if t < 0:
            raise bad
        return t
    if kind is FieldKind.BOOL:
        if not isinstance(v, bool):
            raise bad
        return v
    if kind is FieldKind.MODE:
        try:
            return KillMode(v)
        except ValueError:
            raise bad from None
    raise AssertionError(kind)  # pragma: no cover - the enum is closed


@dataclass(frozen=True)
class ChangeContext:
    """What an event needs to say its changes: the healthy profile, the node size, the time."""

    profile: NodeProfile
    n_sockets: int
    from_ns: int


@dataclass(frozen=True)
class InjectEvent:
    """Base of every event kind. Fields are checked on construction (socket ranges once the
    node size is known, by :meth:`checked`)."""

    kind: ClassVar[EventKind]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _read(f.metadata["kind"], self._where(f), getattr(self, f.name), None)
            object.__setattr__(self, f.name, value)
        self._check_pair(None)

    def _where(self, f: dataclasses.Field[Any], prefix: str = "") -> str:
        return f"{prefix or self.kind.value}.{f.metadata['yaml'] or f.name}"

    def _check_pair(self, prefix: str | None) -> None:
        src, dst = getattr(self, "src", None), getattr(self, "dst", None)
        if src is not None and src == dst:
            raise ConfigError(f"{prefix or self.kind.value}.dst", dst, "a socket other than src")

    def checked(self, n_sockets: int, prefix: str = "") -> InjectEvent:
        """This event with socket fields checked against (and 'all' resolved for) ``n_sockets``."""
        values = {}
        for f in dataclasses.fields(self):
            values[f.name] = _read(f.metadata["kind"], self._where(f, prefix), getattr(self, f.name), n_sockets)
        return dataclasses.replace(self, **values)

    def params(self) -> tuple[tuple[str, Any], ...]:
        return tuple((f.metadata["yaml"] or f.name, getattr(self, f.name)) for f in dataclasses.fields(self))

    def describe(self) -> str:
        """``kind(field=value, ...)`` with the scenario's field names."""
        args = ", ".join(f"{k}={v.value if isinstance(v, Enum) else v}" for k, v in self.params())
        return f"{self.kind.value}({args})"

    def changes(self, ctx: ChangeContext) -> Targeted:
        """The state changes this event makes from ``ctx.from_ns`` on (none by default)."""
        return []

    @property
    def strikes_inside_a_step(self) -> bool:
        """Whether its timed changes alone model it exactly at any nanosecond."""
        return True


# ---- sockets ----------------------------------------------------------------
@dataclass(frozen=True)
class KillSocket(InjectEvent):
    """Socket ``socket`` dies; ``restart``: the driver recovers it at once, else it stays dead
    (its requests fail) until a :class:`RestartSocket`."""

    kind: ClassVar[EventKind] = EventKind.KILL_SOCKET
    socket: int = _f(FieldKind.SOCKET)
    mode: KillMode = _f(FieldKind.MODE, default=KillMode.VIRTUAL)
    restart: bool = _f(FieldKind.BOOL, default=True)

    def changes(self, ctx: ChangeContext) -> Targeted:
        return [([self.socket], FailAt(ctx.from_ns))]


@dataclass(frozen=True)
class RestartSocket(InjectEvent):
    """A socket killed with ``restart: false`` comes back (fresh) and its state is reloaded."""

    kind: ClassVar[EventKind] = EventKind.RESTART_SOCKET
    socket: int = _f(FieldKind.SOCKET)

    @property
    def strikes_inside_a_step(self) -> bool:
        return False  # a recovery: the driver does it between steps


# ---- links ------------------------------------------------------------------
def _pairs(src: int, dst: int, both_ways: bool) -> list[tuple[int, int]]:
    return [(src, dst), (dst, src)] if both_ways else [(src, dst)]


@dataclass(frozen=True)
class LinkDown(InjectEvent):
    """Link ``src -> dst`` (and back, ``both_ways``) stops carrying data; a frame on it is lost."""

    kind: ClassVar[EventKind] = EventKind.LINK_DOWN
    src: int = _f(FieldKind.SOCKET)
    dst: int = _f(FieldKind.SOCKET)
    both_ways: bool = _f(FieldKind.BOOL, default=True)

    def changes(self, ctx: ChangeContext) -> Targeted:
        """Everyone's view of the fabric (multi-hop traffic crosses links a sender does not own)."""
        everyone = list(range(ctx.n_sockets))
        return [(everyone, LinkState(a, b, False, ctx.from_ns)) for a, b in _pairs(self.src, self.dst,
                                                                                  self.both_ways)]


@dataclass(frozen=True)
class LinkUp(InjectEvent):
    """Link ``src -> dst`` (and back) carries data again."""

    kind: ClassVar[EventKind] = EventKind.LINK_UP
    src: int = _f(FieldKind.SOCKET)
    dst: int = _f(FieldKind.SOCKET)
    both_ways: bool = _f(FieldKind.BOOL, default=True)

    def changes(self, ctx: ChangeContext) -> Targeted:
        everyone = list(range(ctx.n_sockets))
        return [(everyone, LinkState(a, b, True, ctx.from_ns)) for a, b in _pairs(self.src, self.dst,
                                                                                 self.both_ways)]


@dataclass(frozen=True)
class LinkDegrade(InjectEvent):
    """Link bandwidth times ``bw_factor`` of the profile's, plus ``extra_latency`` ns."""

    kind: ClassVar[EventKind] = EventKind.LINK_DEGRADE
    src: int = _f(FieldKind.SOCKET)
    dst: int = _f(FieldKind.SOCKET)
    bw_factor: float = _f(FieldKind.FACTOR, default=1.0)
    extra_latency_ns: int = _f(FieldKind.TIME, yaml="extra_latency", default=0)
    both_ways: bool = _f(FieldKind.BOOL, default=False)

    def changes(self, ctx: ChangeContext) -> Targeted:
        base = ctx.profile.p2p
        params = LinkParams(max(1, int(base.link_bw_bytes_per_s * self.bw_factor)),
                            base.link_latency_ns + self.extra_latency_ns)
        everyone = list(range(ctx.n_sockets))
        return [(everyone, SetLink(a, b, params, ctx.from_ns)) for a, b in _pairs(self.src, self.dst,
                                                                                  self.both_ways)]


# ---- rates ------------------------------------------------------------------
def _all_or(sockets: tuple[int, ...] | None, n: int) -> list[int]:
    return list(range(n)) if sockets is None else list(sockets)


@dataclass(frozen=True)
class DdrThrottle(InjectEvent):
    """DDR bandwidth times ``factor`` on ``socket`` (default all): DDR->HBM copies and DDR streams."""

    kind: ClassVar[EventKind] = EventKind.DDR_THROTTLE
    factor: float = _f(FieldKind.FACTOR)
    sockets: tuple[int, ...] | None = _f(FieldKind.SOCKETS, yaml="socket", default=None)

    def changes(self, ctx: ChangeContext) -> Targeted:
        socks = _all_or(self.sockets, ctx.n_sockets)
        out: Targeted = []
        rate = ctx.profile.dma.ddr_hbm_bw_bytes_per_s
        if rate:
            out.append((socks, SetEngineRate(Engine.DDR_HBM, max(1, int(rate * self.factor)), ctx.from_ns)))
        out.append((socks, SetDegradation(ddr_factor=self.factor, from_ns=ctx.from_ns)))
        return out


@dataclass(frozen=True)
class HbmThrottle(InjectEvent):
    """HBM bandwidth times ``factor``: HBM->SRAM copies and kernels' HBM streams."""

    kind: ClassVar[EventKind] = EventKind.HBM_THROTTLE
    factor: float = _f(FieldKind.FACTOR)
    sockets: tuple[int, ...] | None = _f(FieldKind.SOCKETS, yaml="socket", default=None)

    def changes(self, ctx: ChangeContext) -> Targeted:
        socks = _all_or(self.sockets, ctx.n_sockets)
        rate = max(1, int(ctx.profile.dma.hbm_sram_bw_bytes_per_s * self.factor))
        return [(socks, SetEngineRate(Engine.HBM_SRAM, rate, ctx.from_ns)),
                (socks, SetDegradation(hbm_factor=self.factor, from_ns=ctx.from_ns))]


@dataclass(frozen=True)
class HostLinkDegrade(InjectEvent):
    """Host link bandwidth times ``factor``: weight loads and recovery reloads."""

    kind: ClassVar[EventKind] = EventKind.HOST_LINK_DEGRADE
    factor: float = _f(FieldKind.FACTOR)
    sockets: tuple[int, ...] | None = _f(FieldKind.SOCKETS, yaml="socket", default=None)

    def changes(self, ctx: ChangeContext) -> Targeted:
        socks = _all_or(self.sockets, ctx.n_sockets)
        rate = max(1, int(host_rate_per_socket(ctx.profile) * self.factor))
        return [(socks, SetEngineRate(Engine.HOST_LINK, rate, ctx.from_ns)),
                (socks, SetDegradation(host_factor=self.factor, from_ns=ctx.from_ns))]


@dataclass(frozen=True)
class Straggler(InjectEvent):
    """Compute on ``socket`` at ``compute_factor`` of its peak (kernels starting from then)."""

    kind: ClassVar[EventKind] = EventKind.STRAGGLER
    sockets: tuple[int, ...] | None = _f(FieldKind.SOCKETS, yaml="socket")
    compute_factor: float = _f(FieldKind.FACTOR)

    def changes(self, ctx: ChangeContext) -> Targeted:
        return [(_all_or(self.sockets, ctx.n_sockets),
                 SetDegradation(compute_factor=self.compute_factor, from_ns=ctx.from_ns))]


#: The event class of each kind.
EVENT_TYPES: Mapping[EventKind, type[InjectEvent]] = MappingProxyType({
    cls.kind: cls for cls in (KillSocket, RestartSocket, LinkDown, LinkUp, LinkDegrade, DdrThrottle,
                              HbmThrottle, HostLinkDegrade, Straggler)
})


def event_from_mapping(raw: Mapping[str, Any], where: str, n_sockets: int) -> InjectEvent:
    """Build the event ``raw['kind']`` names from its scenario fields (``where`` prefixes errors).

    ``raw`` holds the kind's fields only (no ``kind``, ``at``, ``after_requests``).
    """
    kind = EventKind(raw["kind"])
    cls = EVENT_TYPES[kind]
    fields = {f.metadata["yaml"] or f.name: f for f in dataclasses.fields(cls)}
    for k, v in raw.items():
        if k not in fields and k not in ("kind", "at", "after_requests"):
            raise ConfigError(f"{where}.{k}", v, "one of " + ", ".join(["at", "after_requests", *fields]))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        fk: FieldKind = f.metadata["kind"]
        if name in raw:
            values[f.name] = _read(fk, f"{where}.{name}", raw[name], n_sockets)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}", "<missing>", fk.allowed(n_sockets))
    ev = cls(**values)
    ev._check_pair(where)
    return ev.checked(n_sockets, where)
