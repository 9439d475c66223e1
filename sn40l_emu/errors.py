"""Typed errors: every failure a user can cause or meet has its own class.

Faults are ordinary events that surface as these types (SimGrid's
``NetworkFailureException`` style), never as hangs or bare ``Exception``.
"""

from __future__ import annotations

import reprlib

_MAX_VALUE_CHARS = 80  # never echo more than this of a bad value (it may be a whole file)
_MAX_TEXT_CHARS = 300
_SHORT = reprlib.Repr()
_SHORT.maxstring = _MAX_VALUE_CHARS
_SHORT.maxother = _MAX_VALUE_CHARS
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlong = 40


def short_repr(value: object) -> str:
    """A bounded, one-line ``repr``: bad input is quoted, never echoed whole.

    ``reprlib`` caps depth and length, so even a structure of shared references
    (what YAML aliases build) prints in bounded time.
    """
    try:
        text = _SHORT.repr(value)
    except Exception:  # a repr that fails (e.g. an int too long for str) must not hide the error
        text = f"<{type(value).__name__}>"
    return one_line(text, _MAX_VALUE_CHARS + 10)


def one_line(text: str, limit: int = _MAX_TEXT_CHARS) -> str:
    """``text`` with line breaks collapsed and cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class EmuError(Exception):
    """Base of every error the emulator raises on purpose.

    Subclasses with their own ``__init__`` keep their constructor arguments in
    ``_init_args`` so the error pickles intact across Ray actor boundaries.
    """

    _init_args: tuple[object, ...] = ()

    def __reduce__(self) -> tuple[object, ...]:
        if self._init_args:
            return (type(self), self._init_args)
        return (type(self), self.args)


class ConfigError(EmuError):
    """A profile, model config, scenario or CLI override is invalid.

    The message always names the field path, the value and what is allowed.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self._init_args = (field, value, allowed)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{one_line(field, 120)}: got {short_repr(value)}; allowed: {one_line(allowed)}")


class OutOfMemory(EmuError):
    """An allocation does not fit in a memory tier."""

    def __init__(self, tier: str, requested_bytes: int, free_bytes: int, what: str = "") -> None:
        self._init_args = (tier, requested_bytes, free_bytes, what)
        self.tier = tier
        self.requested_bytes = requested_bytes
        self.free_bytes = free_bytes
        label = f" for {what!r}" if what else ""
        super().__init__(
            f"out of {tier} memory{label}: requested {requested_bytes} B, "
            f"free {free_bytes} B"
        )


class FrameError(EmuError):
    """A P2P frame failed validation; nothing from it was used."""


class LinkDownError(EmuError):
    """No route is left between two sockets because links are down."""

    def __init__(self, src: int, dst: int, detail: str = "") -> None:
        self._init_args = (src, dst, detail)
        self.src = src
        self.dst = dst
        super().__init__(f"no route from socket {src} to socket {dst}: {detail or 'links down'}")


class SocketDeadError(EmuError):
    """A socket (its Ray actor) is dead or did not answer in time."""

    def __init__(self, socket: int, detail: str = "") -> None:
        self._init_args = (socket, detail)
        self.socket = socket
        super().__init__(f"socket {socket} is dead or unreachable: {detail}")


class P2PTimeoutError(SocketDeadError):
    """A receive waited longer than the P2P timeout (wall clock) for its peer."""


class ShardingError(EmuError):
    """A model cannot be split at the requested tensor-parallel degree."""


class NoCapacityError(EmuError):
    """Socket actors need homes the Ray cluster cannot give (too few free socket slots)."""

    def __init__(self, needed: int, free: int, detail: str = "") -> None:
        self._init_args = (needed, free, detail)
        self.needed = needed
        self.free = free
        super().__init__(
            f"{needed} socket(s) need a home but the cluster has {free} free "
            f"'sn40l_socket' slot(s){': ' + detail if detail else ''}"
        )


class SocketKilledError(SocketDeadError):
    """An injected kill struck socket ``socket`` at virtual time ``at_ns``, inside a program.

    ``events`` is the socket's trace up to the kill (its last op cut at ``at_ns``),
    so the caller can show where the step stopped.
    """

    def __init__(self, socket: int, at_ns: int, events: tuple[object, ...] = ()) -> None:
        super().__init__(socket, f"killed at {at_ns} ns (injected)")
        self._init_args = (socket, at_ns, events)
        self.at_ns = at_ns
        self.events = events

    def with_events(self, events: tuple[object, ...]) -> SocketKilledError:
        return SocketKilledError(self.socket, self.at_ns, events)


class LinkLostError(LinkDownError):
    """Link ``src -> dst`` went down at ``at_ns`` while socket ``socket`` had a frame on it.

    The frame is lost (not delivered); the collective it belonged to stops at
    ``at_ns`` on every member that depends on it (:class:`CollectiveAbortedError`).
    """

    def __init__(self, src: int, dst: int, at_ns: int, socket: int, events: tuple[object, ...] = ()) -> None:
        super().__init__(src, dst, f"link {src}->{dst} lost a frame of socket {socket} at {at_ns} ns")
        self._init_args = (src, dst, at_ns, socket, events)
        self.at_ns = at_ns
        self.socket = socket
        self.events = events

    def with_events(self, events: tuple[object, ...]) -> LinkLostError:
        return LinkLostError(self.src, self.dst, self.at_ns, self.socket, events)


class CollectiveAbortedError(EmuError):
    """Socket ``socket``'s collective ``op`` stopped at ``at_ns``: a frame it needed was lost
    (a link went down under it, or its sender was killed)."""

    def __init__(self, socket: int, at_ns: int, op: str, events: tuple[object, ...] = ()) -> None:
        self._init_args = (socket, at_ns, op, events)
        self.socket = socket
        self.at_ns = at_ns
        self.op = op
        self.events = events
        super().__init__(f"socket {socket}: collective {op!r} aborted at {at_ns} ns (a peer's frame was lost)")

    def with_events(self, events: tuple[object, ...]) -> CollectiveAbortedError:
        return CollectiveAbortedError(self.socket, self.at_ns, self.op, events)


#: A fault that stopped a program at a virtual time (each carries ``at_ns`` and ``events``).
StepFault = SocketKilledError | LinkLostError | CollectiveAbortedError


#: Errors an injected fault surfaces as; a driver recovers from them and retries.
FAULT_ERRORS: tuple[type[EmuError], ...] = (SocketDeadError, LinkDownError, CollectiveAbortedError)
