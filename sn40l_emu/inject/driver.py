"""Events on time, faults recovered, every request accounted for: what every workload shares.

When events take effect:

- ``at`` (virtual time): exactly at that nanosecond, even inside a step. The
  runner puts the event's timed changes on the node before the workload
  reaches ``at`` -- links stop carrying data, rates change, a socket dies from
  ``at`` on -- so the op running then is cut there (see
  :mod:`sn40l_emu.socket_actor.socket_model`). While such an event lies
  ahead, cost reuse is off (a reused step would not see it); it resumes once
  every socket has passed ``at``. Routes and rings move around a downed link
  at the next step boundary (the emulator's stand-in for a fabric manager;
  see :mod:`sn40l_emu.fabric.network`). A ``restart_socket`` is a recovery and
  happens at the first step boundary at or after ``at``.
- ``after_requests``: at the first request boundary once that many requests
  have *ended* (completed or failed), effective from that instant.

Faults surface as typed errors (``SocketKilledError``, ``LinkLostError``,
``CollectiveAbortedError``, ``SocketDeadError``), never as hangs. The runner
then recovers (dead sockets come back and reload their state; a downed link
is routed around) and retries the requests the fault stopped, up to
``MAX_ATTEMPTS``; a fault that retrying cannot cure (a partitioned fabric, a
socket killed without restart) fails them at once. Every submitted request
ends ``completed`` or ``failed`` with its reason, and the report is returned
whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sn40l_emu.cluster.node import ManagedNode
from sn40l_emu.errors import EmuError, LinkDownError, LinkLostError, SocketDeadError
from sn40l_emu.inject.changes import changes_for
from sn40l_emu.inject.events import KillMode, KillSocket, LinkDown, LinkUp, RestartSocket
from sn40l_emu.inject.scenario import Scenario, Scheduled
from sn40l_emu.socket_actor.state_changes import FlushLinks, LinkState, SetLink, StateChange
from sn40l_emu.trace import TraceEvent

MAX_ATTEMPTS = 3


@dataclass
class EventReport:
    index: int
    kind: str
    label: str
    applied_at_ns: int | None = None
    requests_done_at_apply: int | None = None
    latency_before_ns: int | None = None
    latency_after_ns: int | None = None
    recovery_ns: int = 0
    retried: int = 0
    failed: int = 0
    note: str = ""
    struck_at_ns: int | None = None  # a fault that stopped a step: when it did
    windows: dict[str, Any] = field(default_factory=dict)  # serve: latency before / during / after


@dataclass
class RequestOutcome:
    """How one submitted request ended."""

    id: int
    status: str  # "completed" or "failed"
    attempts: int
    reason: str = ""
    end_ns: int | None = None


@dataclass
class RunReport:
    scenario: str
    events: list[EventReport]
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    trace: list[TraceEvent] = field(default_factory=list)
    outcomes: list[RequestOutcome] = field(default_factory=list)
    serving: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # an error the run did not recover from (its requests are failed with it)

    def to_json(self) -> dict[str, Any]:
        doc = {"scenario": self.scenario, "events": [asdict(e) for e in self.events],
               "requests": {"submitted": self.submitted, "completed": self.completed,
                            "failed": self.failed, "retried": self.retried},
               "rows": self.rows,
               "outcomes": [asdict(o) for o in self.outcomes]}
        if self.serving:
            doc["serving"] = self.serving
        if self.error:
            doc["error"] = self.error
        return doc


class FaultDriver:
    """Events, faults and recovery of one scenario on ``node``; the workloads call it.

    ``fast`` (default True): between timed events, traced collectives take the batched path
    (no per-message marks) and cost reuse also repeats runs that leave links busy
    (engine/reuse.py). False runs as before both existed, message by message: the
    same nanoseconds and outcomes, for comparison (tests/test_inject_speed.py).
    """

    fast = True

    def __init__(self, scenario: Scenario, node: ManagedNode) -> None:
        self.sc = scenario
        self.node = node
        self.report = RunReport(scenario.name, [EventReport(e.index, e.kind.value, e.label)
                                                for e in scenario.events])
        self.after = sorted((e for e in scenario.events if e.after_requests is not None),
                            key=lambda e: (e.after_requests or 0, e.index))
        self.timed = sorted((e for e in scenario.events if e.at_ns is not None),
                            key=lambda e: (e.at_ns or 0, e.index))
        self.armed: list[Scheduled] = []  # timed changes on the node, ``at`` not yet passed by all
        self.routing_due: list[Scheduled] = []  # link events whose routes move at the next boundary
        self.kills: dict[int, Scheduled] = {}  # armed kills by socket
        self.link_changes: list[StateChange] = []  # re-applied to sockets that come back
        self.manual_dead: set[int] = set()  # killed with restart: false, until restart_socket
        self.done = 0  # requests ended (completed + failed)
        self._last_latency: int | None = None
        self._awaiting_after: list[EventReport] = []
        self._recovering: EventReport | None = None
        self.needs_recovery = False
        self._reuse_switches: list[Callable[[bool], None]] = []
        self._marks = True  # whether the node's trace marks every P2P message (nodes start so)

    # ---- clocks -----------------------------------------------------------
    def clocks(self) -> list[int]:
        """The node's clocks (the node alone owns virtual time; cost reuse applies its results there)."""
        return self.node.clocks()

    def now(self) -> int:
        return max(self.clocks())

    def advance_all(self, t_ns: int) -> None:
        """Every socket's clock to at least ``t_ns``."""
        self.node.advance_clocks(dict.fromkeys(range(self.node.n_sockets), t_ns))

    def _barrier(self) -> int:
        t = self.now()
        self.advance_all(t)
        return t

    # ---- events -----------------------------------------------------------
    def arm(self) -> None:
        """Put every timed event's changes on the node, effective from its ``at`` ns."""
        for ev in self.timed:
            e = ev.event
            at = ev.at_ns or 0
            if isinstance(e, RestartSocket):
                continue  # a recovery: fired at a boundary
            if isinstance(e, KillSocket):
                self.kills[e.socket] = ev
            for sockets, change in changes_for(ev, self.node.profile, self.node.n_sockets, at):
                if isinstance(change, LinkState):  # routes move at the next boundary
                    change = LinkState(change.src, change.dst, change.up, at, physical=True, routing=False)
                self.node.apply_change(sockets, change)
                if isinstance(change, (SetLink, LinkState)):
                    self.link_changes.append(change)
            self.armed.append(ev)
            if isinstance(e, (LinkDown, LinkUp)):
                self.routing_due.append(ev)
        self._set_reuse()

    def _set_reuse(self) -> None:
        """Cost reuse only while no armed event lies ahead of a socket's clock; the trace marks
        every P2P message only then too (elsewhere traced collectives take the batched path)."""
        try:
            low = min(self.clocks())
        except SocketDeadError:  # a socket is down until recovery: stay exact meanwhile
            low = -1
        exact = any((ev.at_ns or 0) > low for ev in self.armed)
        for switch in self._reuse_switches:
            switch(not exact)
        if self.fast and exact != self._marks:
            marks = getattr(self.node, "set_message_marks", None)
            if marks is not None:
                marks(exact)
                self._marks = exact

    def _mark_applied(self, ev: Scheduled, at_ns: int) -> None:
        rep = self.report.events[ev.index]
        if rep.applied_at_ns is not None:
            return
        rep.applied_at_ns = at_ns
        rep.requests_done_at_apply = self.done
        rep.latency_before_ns = self._last_latency
        self._awaiting_after.append(rep)
        self.report.trace.append(TraceEvent(at_ns, 0, -1, "inject", ev.label, {"kind": ev.kind.value}))

    def boundary(self) -> None:
        """Between steps: fire what is due, move routes, mark passed timed events, recover."""
        now = self.now()
        for ev in list(self.armed):
            if (ev.at_ns or 0) <= now:
                self._mark_applied(ev, ev.at_ns or 0)
                if not isinstance(ev.event, KillSocket):
                    self.armed.remove(ev)
        due_routes = [ev for ev in self.routing_due if (ev.at_ns or 0) <= now]
        if due_routes:
            now = self._barrier()  # every member of the next collective sees the same routes
            for ev in due_routes:
                self.routing_due.remove(ev)
                for sockets, change in changes_for(ev, self.node.profile, self.node.n_sockets, now):
                    if isinstance(change, LinkState):
                        change = LinkState(change.src, change.dst, change.up, now, physical=False, routing=True)
                        self.node.apply_change(sockets, change)
                        self.link_changes.append(change)
        for ev in [e for e in self.timed if isinstance(e.event, RestartSocket) and (e.at_ns or 0) <= now]:
            self.timed.remove(ev)
            self._fire_boundary(ev, now)
        for ev in [e for e in self.after if (e.after_requests or 0) <= self.done]:
            self.after.remove(ev)
            self._fire_boundary(ev, now)
        self._set_reuse()

    def _fire_boundary(self, ev: Scheduled, now_ns: int) -> None:
        rep = self.report.events[ev.index]
        self._mark_applied(ev, now_ns)
        e = ev.event
        if isinstance(e, KillSocket):
            self.node.kill(e.socket, process=e.mode is KillMode.PROCESS)
            if not e.restart:
                self.manual_dead.add(e.socket)
            self._recovering = rep
        elif isinstance(e, RestartSocket):
            self.manual_dead.discard(e.socket)
            self._recovering = rep
            rep.note = "socket restarted; its state is reloaded before the next request"
            self.needs_recovery = True
        else:
            for sockets, change in changes_for(ev, self.node.profile, self.node.n_sockets, now_ns):
                self.node.apply_change(sockets, change)
                if isinstance(change, (SetLink, LinkState)):
                    self.link_changes.append(change)

    def after_latency(self, latency_ns: int) -> None:
        for rep in self._awaiting_after:
            rep.latency_after_ns = latency_ns
        self._awaiting_after = []
        self._last_latency = latency_ns

    # ---- faults -----------------------------------------------------------
    def struck(self, exc: EmuError) -> tuple[bool, bool]:
        """A fault stopped a step: record it, take dead sockets down. Returns (retry, recover).

        ``retry``: whether running the stopped requests again can succeed;
        ``recover``: whether sockets must come back before that.
        """
        at = getattr(exc, "at_ns", None)
        if at is not None:  # stopped inside a step: the aborted collective's traffic ends there
            self.node.apply_change(list(range(self.node.n_sockets)), FlushLinks(at))
        if at is None:  # a dead socket: the node's own record of the clocks (no call to the dead)
            at = max(self.node.clocks())
        self.report.trace += [e for e in getattr(exc, "events", ()) if isinstance(e, TraceEvent)]
        self.report.trace.append(TraceEvent(at, 0, -1, "inject", f"fault: {exc}", {}))
        for ev in list(self.armed):
            if (ev.at_ns or 0) <= at:
                self._mark_applied(ev, ev.at_ns or 0)
                self.report.events[ev.index].struck_at_ns = at
                self._recovering = self.report.events[ev.index]
                if not isinstance(ev.event, KillSocket):
                    self.armed.remove(ev)
        if isinstance(exc, SocketDeadError):
            dead = exc.socket
            kill = self.kills.pop(dead, None)
            if kill is not None:  # the injected kill struck: take the socket down for real
                if kill in self.armed:
                    self.armed.remove(kill)
                e = kill.event
                assert isinstance(e, KillSocket)
                self._recovering = self.report.events[kill.index]
                self.node.kill(dead, process=e.mode is KillMode.PROCESS)
                if not e.restart:
                    self.manual_dead.add(dead)
            return not self.manual_dead, not self.manual_dead
        if isinstance(exc, LinkDownError) and not isinstance(exc, LinkLostError):
            return False, False  # no route at a collective's start: partitioned until a link_up
        return True, False  # a frame was lost: routes move around the link at the next boundary

    def recover(self, reload: Callable[[list[int]], int]) -> int:
        back = self.node.recover()
        for change in self.link_changes:  # links keep their injected state; a new socket learns it
            self.node.apply_change(back, change)
        rec_ns = int(reload(back))
        if self._recovering is not None:
            self._recovering.recovery_ns += rec_ns
            report = getattr(self.node, "last_recovery", None)
            dropped = getattr(report, "dropped_frames", 0) if report is not None else 0
            self._recovering.note = (f"recovered sockets {back}: state reloaded from the host weight store; "
                                     f"{dropped} in-flight frame(s) dropped on the survivors")
        self.report.trace.append(TraceEvent(self.now() - rec_ns, rec_ns, -1, "inject",
                                            f"recovery of sockets {back}", {}))
        return rec_ns

    def count_retry(self, n: int) -> None:
        self.report.trace.append(TraceEvent(self.now(), 0, -1, "inject", f"retry of {n} request(s)", {}))
        self.report.retried += n
        if self._recovering is not None:
            self._recovering.retried += n

    def count_failed(self, ids: list[int], reason: str, attempts: int) -> None:
        self.report.failed += len(ids)
        self.done += len(ids)
        if self._recovering is not None:
            self._recovering.failed += len(ids)
        self.report.outcomes += [RequestOutcome(i, "failed", attempts, reason) for i in ids]

    def count_completed(self, ids: list[int], attempts: int, end_ns: list[int]) -> None:
        self.report.completed += len(ids)
        self.done += len(ids)
        self.report.outcomes += [RequestOutcome(i, "completed", attempts, "", t)
                                 for i, t in zip(ids, end_ns, strict=True)]

    def add_reuse_switch(self, switch: Callable[[bool], None]) -> None:
        """``switch(on)`` turns a cost-reuse layer on or off (see :meth:`arm`)."""
        self._reuse_switches.append(switch)
