"""Memoised group programs for timing mode.

Building a full-size program is pure but not free (tens of ms for a 7B model
at TP8), and experiments ask for the same (model, plan, step, mode) again and
again: every expert of a composition has the same shape, every request runs
the same decode steps. The book builds each once. When a plan's ranks are
symmetric (checked once per model/plan/mode/phase/batch by building every
rank and comparing the ops) only rank 0 is built and shared.
"""

from __future__ import annotations

from typing import Any, Protocol

from sn40l_emu.program import Program
from sn40l_emu.workload import ExecMode, ModelConfig, ShardPlan, Step, build_program
from sn40l_emu.workload.placement import HBM_ONLY, Placement


class GroupPrograms(Protocol):
    """Anything that hands out a plan's group programs for a step (a book, a layer-canonical book)."""

    def group(self, model: ModelConfig, plan: ShardPlan, step: Step, mode: ExecMode) -> dict[int, Program]:
        ...


class ProgramBook:
    def __init__(self, max_entries: int = 4096) -> None:
        self._memo: dict[Any, dict[int, Program]] = {}
        self._symmetric: dict[Any, bool] = {}
        self.max_entries = max_entries

    def group(self, model: ModelConfig, plan: ShardPlan, step: Step, mode: ExecMode,
              placement: Placement = HBM_ONLY) -> dict[int, Program]:
        key = (model, plan.tp, plan.group, step, mode, placement)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        sym_key = (model, plan.tp, plan.group, mode, step.phase, step.batch, placement)
        if sym_key not in self._symmetric:
            full = {s: build_program(model, plan, step, mode, r, placement=placement)
                    for r, s in enumerate(plan.group)}
            first = full[plan.group[0]].ops
            self._symmetric[sym_key] = all(p.ops == first for p in full.values())
            progs = full
        elif self._symmetric[sym_key]:
            p0 = build_program(model, plan, step, mode, 0, placement=placement)
            progs = {s: p0 for s in plan.group}
        else:
            progs = {s: build_program(model, plan, step, mode, r, placement=placement)
                     for r, s in enumerate(plan.group)}
        if len(self._memo) >= self.max_entries:
            self._memo.clear()
        self._memo[key] = progs
        return progs
