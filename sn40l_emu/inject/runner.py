"""Run a scenario: its workload on a node, its events on time, faults recovered (see driver.py)."""

from __future__ import annotations

from sn40l_emu.inject import workloads
from sn40l_emu.inject.driver import MAX_ATTEMPTS, EventReport, FaultDriver, RequestOutcome, RunReport
from sn40l_emu.inject.scenario import WorkloadKind

__all__ = ["MAX_ATTEMPTS", "EventReport", "RequestOutcome", "RunReport", "ScenarioRunner"]

_WORKLOADS = {
    WorkloadKind.COE: workloads.run_coe,
    WorkloadKind.SERVE: workloads.run_serve,
    WorkloadKind.TP: workloads.run_tp,
    WorkloadKind.ALLREDUCE: workloads.run_allreduce,
}


class ScenarioRunner(FaultDriver):
    """Drives one scenario's workload on ``node``; :meth:`run` returns the report, whatever happened."""

    def run(self) -> RunReport:
        try:
            _WORKLOADS[self.sc.workload.kind](self)
        finally:
            if not self._marks:  # the node goes back as it came: every message marked
                self.node.set_message_marks(True)  # type: ignore[attr-defined]
                self._marks = True
        for rep in self.report.events:
            if rep.applied_at_ns is None:
                rep.note = "never fired (the workload ended first)"
        self.report.outcomes.sort(key=lambda o: o.id)
        return self.report
