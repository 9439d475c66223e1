"""Run a scenario: the workload on a node, events applied on time, faults recovered.

Timing of events: an event fires at the first request (or all-reduce)
boundary at or after its virtual time ``at`` — or once ``after_requests``
requests have finished — and its changes are effective from that instant.
Faults surface as typed errors (``SocketDeadError``), never as hangs (the P2P
receive has a timeout); the coordinator then recovers the node and retries the
batch. Every submitted request ends ``completed`` or ``failed`` with its error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sn40l_emu.cluster.node import ManagedNode
from sn40l_emu.errors import EmuError, SocketDeadError
from sn40l_emu.inject.changes import changes_for
from sn40l_emu.inject.scenario import Event, EventKind, KillMode, Scenario, WorkloadKind
from sn40l_emu.socket_actor.state_changes import LinkState, SetLink, StateChange
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

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "events": [asdict(e) for e in self.events],
                "requests": {"submitted": self.submitted, "completed": self.completed,
                             "failed": self.failed, "retried": self.retried},
                "rows": self.rows}


class ScenarioRunner:
    def __init__(self, scenario: Scenario, node: ManagedNode) -> None:
        self.sc = scenario
        self.node = node
        self.report = RunReport(scenario.name, [EventReport(e.index, e.kind.value, e.label) for e in scenario.events])
        self.pending = sorted(scenario.events, key=lambda e: (e.at_ns if e.at_ns is not None else 1 << 62,
                                                              e.after_requests or 0, e.index))
        self.link_changes: list[StateChange] = []  # re-applied to sockets that come back
        self.manual_dead: set[int] = set()  # killed with restart: false, until restart_socket
        self._last_latency: int | None = None
        self._awaiting_after: list[EventReport] = []
        self._recovering: EventReport | None = None
        self._needs_recovery = False

    # ---- events -----------------------------------------------------------
    def _due(self, now_ns: int, done: int) -> list[Event]:
        due = [e for e in self.pending if (e.at_ns is not None and e.at_ns <= now_ns)
               or (e.after_requests is not None and e.after_requests <= done)]
        for e in due:
            self.pending.remove(e)
        return due

    def apply_due(self, now_ns: int, done: int) -> None:
        for ev in self._due(now_ns, done):
            rep = self.report.events[ev.index]
            rep.applied_at_ns = now_ns
            rep.requests_done_at_apply = done
            rep.latency_before_ns = self._last_latency
            self._awaiting_after.append(rep)
            self.report.trace.append(TraceEvent(now_ns, 0, -1, "inject", ev.label, {"kind": ev.kind.value}))
            if ev.kind is EventKind.KILL_SOCKET:
                s = ev.get("socket")
                self.node.kill(s, process=ev.get("mode") is KillMode.PROCESS)
                if not ev.get("restart"):
                    self.manual_dead.add(s)
                self._recovering = rep
            elif ev.kind is EventKind.RESTART_SOCKET:
                s = ev.get("socket")
                self.manual_dead.discard(s)
                self._recovering = rep
                rep.note = "socket restarted; its state is reloaded before the next request"
                self._needs_recovery = True
            else:
                for sockets, change in changes_for(ev, self.node.profile, self.node.n_sockets, now_ns):
                    self.node.apply_change(sockets, change)
                    if isinstance(change, (SetLink, LinkState)):
                        self.link_changes.append(change)

    def _after(self, latency_ns: int) -> None:
        for rep in self._awaiting_after:
            rep.latency_after_ns = latency_ns
        self._awaiting_after = []
        self._last_latency = latency_ns

    def _recover(self, reload: Any) -> int:
        back = self.node.recover()
        for change in self.link_changes:  # links keep their injected state; a new socket learns it
            self.node.apply_change(back, change)
        rec_ns = int(reload(back))
        if self._recovering is not None:
            self._recovering.recovery_ns += rec_ns
            self._recovering.note = f"recovered sockets {back}: state reloaded from the host weight store"
        self.report.trace.append(TraceEvent(max(self.node.clocks()) - rec_ns, rec_ns, -1, "inject",
                                            f"recovery of sockets {back}", {}))
        return rec_ns

    # ---- workloads --------------------------------------------------------
    def run(self) -> RunReport:
        if self.sc.workload.kind is WorkloadKind.COE:
            self._run_coe()
        else:
            self._run_allreduce()
        for rep in self.report.events:
            if rep.applied_at_ns is None:
                rep.note = "never fired (the workload ended first)"
        return self.report

    def _run_coe(self) -> None:
        from sn40l_emu.coe.cache import CachePolicy
        from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
        from sn40l_emu.coe.workload import batches, parse_workload
        from sn40l_emu.engine.layer_reuse import LayerPrograms
        from sn40l_emu.engine.program_book import ProgramBook
        from sn40l_emu.workload import load_model

        w = self.sc.workload
        model = load_model(w.model)
        coord = CoECoordinator(self.node, CoESetup(model, w.experts, w.batch, w.prompt_len, w.tokens,
                                                   CachePolicy(w.policy)), book=LayerPrograms(ProgramBook()))
        coord.load()
        work = batches(parse_workload(w.workload), w.experts, w.batch, w.batches, w.prompt_len, w.tokens, w.seed)
        self.report.submitted = sum(len(b) for b in work)
        done = 0
        for k, batch in enumerate(work):
            self.apply_due(max(self.node.clocks()), done)
            if self._needs_recovery:
                self._recover(coord.reload_after_failure)
                self._needs_recovery = False
            attempt = 0
            while True:
                attempt += 1
                try:
                    if self.manual_dead:
                        raise SocketDeadError(min(self.manual_dead), "killed and not restarted")
                    res = coord.run_batch(batch)
                except SocketDeadError as exc:
                    coord.cache.unpin_all()
                    t_seen = max(self.node.clocks())  # the node's own record: no call to the dead
                    if self.manual_dead or attempt >= MAX_ATTEMPTS:
                        self._fail(batch, k, exc, attempt)
                        break
                    self.report.retried += len(batch)
                    if self._recovering is not None:
                        self._recovering.retried += len(batch)
                    self._recover(lambda back, t=t_seen: coord.reload_after_failure(back, t))
                    continue
                done += len(batch)
                self.report.completed += len(batch)
                self.report.trace += res.events
                self.report.rows.append({"batch": k, "attempts": attempt, "total_ns": res.total_ns,
                                         "router_ns": res.router_ns, "switch_ns": res.switch_ns,
                                         "expert_ns": res.expert_ns, "hbm_hits": res.hits,
                                         "hbm_misses": res.misses, "requests": [r.request for r in res.requests],
                                         "status": "completed"})
                self._after(res.total_ns)
                break

    def _fail(self, batch: list[Any], k: int, exc: EmuError, attempts: int) -> None:
        self.report.failed += len(batch)
        if self._recovering is not None:
            self._recovering.failed += len(batch)
        self.report.rows.append({"batch": k, "attempts": attempts, "status": "failed", "error": str(exc),
                                 "requests": [r.id for r in batch]})

    def _run_allreduce(self) -> None:
        from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp, Program

        w = self.sc.workload
        group = tuple(range(w.sockets))
        count = w.size_bytes // 4
        op = CollectiveOp("allreduce", CollectiveKind.ALL_REDUCE, group, (count,), "float32",
                          algo=Algo(w.algo), chunks=w.chunks)
        self.report.submitted = w.repeats
        for k in range(w.repeats):
            self.apply_due(max(self.node.clocks()), k)
            if self._needs_recovery:
                self._recover(lambda back: 0)  # nothing to reload: an all-reduce keeps no state
                self._needs_recovery = False
            attempt = 0
            while True:
                attempt += 1
                now = max(self.node.clocks())
                self.node.advance_clocks(dict.fromkeys(group, now))
                try:
                    if self.manual_dead:
                        raise SocketDeadError(min(self.manual_dead), "killed and not restarted")
                    res = self.node.run_programs({s: Program.of(f"allreduce {k}", [op]) for s in group})
                except SocketDeadError as exc:
                    if self.manual_dead or attempt >= MAX_ATTEMPTS:
                        self.report.failed += 1
                        self.report.rows.append({"repeat": k, "status": "failed", "error": str(exc)})
                        break
                    self.report.retried += 1
                    self._recover(lambda back: 0)
                    continue
                break
            if self.report.rows and self.report.rows[-1].get("repeat") == k:
                continue  # failed
            t = max(r.end_ns for r in res.values()) - now
            self.report.completed += 1
            self.report.rows.append({"repeat": k, "status": "completed", "time_ns": t,
                                     "busbw_gbps": w.size_bytes / t * 2 * (len(group) - 1) / len(group)})
            self.report.trace += [e for r in res.values() for e in r.events]
            self._after(t)
