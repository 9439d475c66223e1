"""Injection from Python: schedule typed events, run a workload, get the report.

```python
from sn40l_emu import events
from sn40l_emu.inject import InjectionPlan

plan = InjectionPlan(profile="sn40l", backend="local")
plan.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.1), at="5ms")
plan.schedule(events.KillSocket(3, mode="virtual"), after_requests=16)
report = plan.run_coe(experts=50, batch=8, tokens=20, batches=4)
print(report.completed, report.failed, report.to_json()["events"])
```

A plan is a scenario built in code instead of YAML: the same events, the same
runner, the same report (:class:`~sn40l_emu.inject.runner.RunReport`). ``at``
is a virtual time on the node's clocks (``"5ms"``, ``250_000`` ns), and may
fall inside a step; ``after_requests`` counts ended (completed + failed)
requests. Given an open ``node``, a plan runs on it; otherwise each run opens
a node of ``profile`` on ``backend`` and closes it afterwards.
"""

from __future__ import annotations

from typing import Any

from sn40l_emu.cluster.node import ManagedNode
from sn40l_emu.config import NodeProfile, load_profile
from sn40l_emu.errors import ConfigError, EmuError
from sn40l_emu.inject.events import InjectEvent
from sn40l_emu.inject.runner import RunReport, ScenarioRunner
from sn40l_emu.inject.scenario import Scenario, Scheduled, WorkloadKind, WorkloadSpec, parse_when


class InjectionPlan:
    """Typed events scheduled by a script, run against one workload at a time."""

    def __init__(self, profile: str | NodeProfile = "sn40l", *, backend: str = "ray",
                 overrides: tuple[str, ...] = (), node: ManagedNode | None = None, name: str = "script") -> None:
        if backend not in ("ray", "local"):
            raise ConfigError("backend", backend, "'ray' or 'local'")
        self.profile = profile if isinstance(profile, NodeProfile) else load_profile(profile, list(overrides))
        self.backend = backend
        self.node = node
        self.name = name
        self._events: list[Scheduled] = []

    @property
    def events(self) -> tuple[Scheduled, ...]:
        return tuple(self._events)

    def schedule(self, event: InjectEvent, *, at: str | int | None = None,
                 after_requests: int | None = None) -> Scheduled:
        """Fire ``event`` at virtual time ``at`` or once ``after_requests`` requests have ended."""
        if not isinstance(event, InjectEvent):
            raise ConfigError("event", repr(event)[:80], "an event from sn40l_emu.events")
        i = len(self._events)
        where = f"events[{i}] ({event.kind.value})"
        at_ns, after = parse_when(where, at, after_requests)
        n = self.node.n_sockets if self.node is not None else self.profile.sockets
        ev = Scheduled(i, event.checked(n, where), at_ns, after)
        self._events.append(ev)
        return ev

    def clear(self) -> None:
        """Forget every scheduled event."""
        self._events = []

    # ---- running ----------------------------------------------------------
    def run(self, workload: WorkloadSpec) -> RunReport:
        """Run ``workload`` with the scheduled events; the report accounts for every request."""
        sc = Scenario(self.name, self.profile.name, (), self.backend, workload, tuple(self._events))
        if self.node is not None:
            return ScenarioRunner(sc, self.node).run()
        return run_on_new_node(sc, self.profile, self.backend)

    def _workload(self, kind: WorkloadKind, **fields: Any) -> WorkloadSpec:
        from sn40l_emu.inject.scenario import parse_workload

        return parse_workload({"kind": kind.value, **{k: v for k, v in fields.items() if v is not None}})

    def run_coe(self, *, experts: int = 50, batch: int = 8, tokens: int = 20, batches: int = 4,
                model: str = "llama2-7b", prompt_len: int = 128, workload: str = "zipf:1.0",
                policy: str = "lru", seed: int = 0) -> RunReport:
        """CoE batches through the coordinator."""
        return self.run(self._workload(WorkloadKind.COE, experts=experts, batch=batch, tokens=tokens,
                                       batches=batches, model=model, prompt_len=prompt_len, workload=workload,
                                       policy=policy, seed=seed))

    def run_serve(self, *, rate_per_s: float = 20.0, requests: int = 64, experts: int = 50, batch: int = 8,
                  tokens: int = 20, model: str = "llama2-7b", prompt_len: int = 128,
                  workload: str = "zipf:1.0", policy: str = "lru", seed: int = 0) -> RunReport:
        """CoE serving: Poisson arrivals, FIFO batching; p50/p99 before, during and after each event."""
        return self.run(self._workload(WorkloadKind.SERVE, rate_per_s=rate_per_s, requests=requests,
                                       experts=experts, batch=batch, tokens=tokens, model=model,
                                       prompt_len=prompt_len, workload=workload, policy=policy, seed=seed))

    def run_tp(self, *, model: str = "llama2-7b", batch: int = 1, prompt_len: int = 128, tokens: int = 20,
               generations: int = 4) -> RunReport:
        """TP generations of one model over every socket."""
        return self.run(self._workload(WorkloadKind.TP, model=model, batch=batch, prompt_len=prompt_len,
                                       tokens=tokens, generations=generations))

    def run_allreduce(self, *, size_bytes: str | int = "64 MiB", repeats: int = 8, algo: str = "ring",
                      chunks: int = 8, sockets: int | None = None) -> RunReport:
        """Repeated all-reduces over ``sockets`` (default: every socket)."""
        n = sockets or (self.node.n_sockets if self.node is not None else self.profile.sockets)
        return self.run(self._workload(WorkloadKind.ALLREDUCE, size_bytes=size_bytes, repeats=repeats,
                                       algo=algo, chunks=chunks, sockets=n))


def run_on_new_node(sc: Scenario, profile: NodeProfile, backend: str) -> RunReport:
    """Open a node for ``sc``, run it, close the node. An error the runner does not recover
    from is recorded in the report (``error``), its requests failed with it, and re-raised
    with the report attached as ``exc.report``."""
    from sn40l_emu.cluster.session import Backend, open_node

    n = sc.workload.sockets if sc.workload.kind is WorkloadKind.ALLREDUCE else None
    with open_node(profile, backend=Backend(backend), n_sockets=n) as node:
        runner = ScenarioRunner(sc, node)
        try:
            return runner.run()
        except EmuError as exc:
            rep = runner.report
            rep.error = str(exc)
            ended = {o.id for o in rep.outcomes}
            left = [i for i in range(rep.submitted) if i not in ended]
            runner.count_failed(left[: rep.submitted - rep.completed - rep.failed], str(exc), 1)
            exc.report = rep  # type: ignore[attr-defined]
            raise


def schedule_on(emulator: Any, event: InjectEvent, *, at: str | int | None = None,
                after_requests: int | None = None) -> Scheduled:
    """``Emulator.schedule``: put ``event`` on the emulator's injection plan (made on first use from
    its profile, overrides and backend). ``Emulator.run_coe`` then runs through :meth:`InjectionPlan.run_coe`
    and returns its :class:`RunReport`; the plan is used up by that run."""
    plan = plan_of(emulator)
    ev = plan.schedule(event, at=at, after_requests=after_requests)
    emulator.scheduled.append(ev)
    return ev


def plan_of(emulator: Any) -> InjectionPlan:
    """The emulator's injection plan (created on first use)."""
    plan = getattr(emulator, "_plan", None)
    if plan is None:
        plan = InjectionPlan(emulator.profile, backend=emulator.backend, overrides=tuple(emulator.overrides))
        emulator._plan = plan
    assert isinstance(plan, InjectionPlan)
    return plan


__all__ = ["InjectionPlan", "plan_of", "run_on_new_node", "schedule_on"]
