"""Decoder layers as segments of one program (timing mode), and layer-canonical programs.

A model's decoder layers are the same program again and again (same shapes,
same collectives), so once one layer has run on the node, the next costs
exactly the same, shifted in time. :class:`~sn40l_emu.engine.reuse.CostReuse`
runs a timing-mode program as a sequence of segments::

    [embed, all-reduce] [L0 ...] [L1 ...] ... [L{n-1} ...] [lm_head, all-gather, unshard]

cut here (:func:`split_layers`), each segment run for real the first time and
reused afterwards while that is exact. Layer segments are made identical by
writing every layer's op names as ``L*.<op>`` (names never enter a cost); a
segment that differs in anything else simply runs for real. So a 126-layer
Llama3.1-405B decode step costs a handful of real segments instead of 253 real
all-reduces.

Why this is exact: a socket's program is a sequence, so running it in
consecutive pieces gives the same clocks as running it whole (the socket keeps
its clock, links and collective sequence numbers between calls); and the
reuse of a piece is the same shift argument as for whole decode steps.
``tests/test_tp_scaling.py`` checks end times and breakdowns against the plain
node.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from sn40l_emu.program import CollectiveOp, KernelOp, Op, Program
from sn40l_emu.socket_actor.socket_model import BREAKDOWN_KEYS, ProgramResult
from sn40l_emu.workload import ExecMode, ModelConfig, ShardPlan, Step, make_plan
from sn40l_emu.workload.placement import HBM_ONLY, Placement

if TYPE_CHECKING:
    from sn40l_emu.engine.program_book import ProgramBook

# decoder-layer ops are named "L{i}.<op>" (sn40l_emu.workload.graph); "L*.<op>" once canonical
_LAYER = re.compile(r"^L(\d+|\*)\.")
_CANON = "L*."


def layer_of(op: Op) -> str | None:
    """The decoder layer of an op ("0", "1", ... or "*" once canonical); None outside the layers."""
    m = _LAYER.match(getattr(op, "name", ""))
    return m.group(1) if m else None


def canonical_op(op: Op) -> Op:
    """The op with its layer index written as ``L*`` (in its stages too)."""
    if layer_of(op) in (None, "*"):
        return op
    if isinstance(op, KernelOp):
        stages = tuple(replace(s, name=_LAYER.sub(_CANON, s.name)) for s in op.stages)
        return replace(op, name=_LAYER.sub(_CANON, op.name), stages=stages)
    if isinstance(op, CollectiveOp):
        return replace(op, name=_LAYER.sub(_CANON, op.name))
    return op


def split_layers(ops: tuple[Op, ...]) -> list[tuple[str | None, list[Op]]]:
    """Consecutive runs of ops: outside the layers (key None), then one run per decoder layer.

    A layer ends where the layer index changes or, in canonical form, where
    the name of the layer's first op comes round again.
    """
    groups: list[tuple[str | None, list[Op]]] = []
    first_name = ""
    for op in ops:
        layer = layer_of(op)
        name = getattr(op, "name", "")
        new = not groups or groups[-1][0] != layer or (layer is not None and name == first_name)
        if new:
            groups.append((layer, []))
            first_name = name
        groups[-1][1].append(op)
    return groups


def canonical_program(program: Program) -> Program:
    """``program`` with every decoder layer's ops in canonical (``L*``) form."""
    return Program(program.label, tuple(canonical_op(op) for op in program.ops))


class LayerPrograms:
    """Group programs in canonical form, built from a one-layer copy of the model.

    Every decoder layer of a Llama-style model lowers to the same ops but for
    the layer index in their names, so the canonical program of an N-layer
    model is the one-layer program with its layer repeated N times (a test
    checks this against the full build for every shipped model and mode).
    Building one layer instead of N makes a 200-step decode loop cheap; the
    repeated layers are the same op objects, so cost memos hit. Layers
    ``>= hbm_layers`` take their ops from the ``spill`` placement (weights
    streamed from DDR or host memory).
    """

    def __init__(self, book: ProgramBook) -> None:
        self.book = book
        self._one: dict[tuple[ModelConfig, int, tuple[int, ...]], tuple[ModelConfig, ShardPlan]] = {}
        self._memo: dict[tuple[int, int, int], tuple[Program, Program, Program]] = {}

    def _one_layer(self, model: ModelConfig, plan: ShardPlan) -> tuple[ModelConfig, ShardPlan]:
        key = (model, plan.tp, plan.group)
        hit = self._one.get(key)
        if hit is None:
            one = replace(model, num_hidden_layers=1)
            hit = self._one[key] = (one, make_plan(one, plan.tp, plan.group))
        return hit

    def group(self, model: ModelConfig, plan: ShardPlan, step: Step, mode: ExecMode, *,
              hbm_layers: int | None = None, spill: Placement = HBM_ONLY) -> dict[int, Program]:
        """Canonical programs of ``plan.group`` for ``step``; all layers in HBM by default."""
        n = model.num_hidden_layers
        k = n if hbm_layers is None else max(0, min(n, hbm_layers))
        one, plan1 = self._one_layer(model, plan)
        base = self.book.group(one, plan1, step, mode, HBM_ONLY)
        other = self.book.group(one, plan1, step, mode, spill) if k < n else base
        out: dict[int, Program] = {}
        for s in plan.group:
            key = (id(base[s]), id(other[s]), k)
            hit = self._memo.get(key)
            if hit is None or hit[0] is not base[s] or hit[1] is not other[s]:
                full = self._assemble(base[s], other[s], k, n)
                if len(self._memo) > 10_000:
                    self._memo.clear()
                hit = self._memo[key] = (base[s], other[s], full)
            out[s] = hit[2]
        return out

    @staticmethod
    def _assemble(hbm: Program, spilled: Program, hbm_layers: int, layers: int) -> Program:
        def parts(p: Program) -> tuple[tuple[Op, ...], tuple[Op, ...], tuple[Op, ...]]:
            groups = split_layers(p.ops)
            found = [i for i, (key, _) in enumerate(groups) if key is not None]
            if len(found) != 1:
                raise ValueError(f"{p.label}: expected one decoder layer between embedding and LM head")
            i = found[0]
            prefix = tuple(op for _, ops in groups[:i] for op in ops)
            suffix = tuple(op for _, ops in groups[i + 1:] for op in ops)
            return prefix, tuple(canonical_op(op) for op in groups[i][1]), suffix

        prefix, layer, suffix = parts(hbm)
        spill_layer = parts(spilled)[1] if hbm_layers < layers else layer
        ops = prefix + layer * hbm_layers + spill_layer * (layers - hbm_layers) + suffix
        return Program(hbm.label, ops)


def merge_results(parts: list[ProgramResult], label: str) -> ProgramResult:
    """One socket's consecutive segment results as the result of the whole program."""
    bd = dict.fromkeys(BREAKDOWN_KEYS, 0)
    for r in parts:
        for k, v in r.breakdown_ns.items():
            bd[k] = bd.get(k, 0) + v
    first, last = parts[0], parts[-1]
    return ProgramResult(
        first.socket, label, first.start_ns, last.end_ns, bd,
        [ns for r in parts for ns in r.kernel_ns],
        [ev for r in parts for ev in r.events],
        last.link_free_ns,
        all(r.links_idle for r in parts),
        sum(r.hidden_ns for r in parts),
        last.busy_links,
    )
