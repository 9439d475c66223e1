"""The CoE router as its own program: a prefill over the prompts, then the expert choice.

docs/model.md §4: a composition's router reads the prompt and picks the
expert. Here it is a model of the experts' shape (``CoESetup.model``), TP over
every socket like an expert, whose program is

    [embed, all-reduce] [decoder layers] [expert-choice head]

i.e. an expert's prefill program with the vocabulary LM head (and its logits
all-gather) replaced by the head of :mod:`sn40l_emu.workload.router_head`: a
classifier has no next-token logits to produce.

Timing mode runs that program on the sockets; the expert of each prompt stays
the workload's (a synthetic workload has no real prompt a router could read,
and the cache studies need the workload's popularity law). Functional mode
runs it over real prompt token ids with real router weights from the host
weight store, and the argmax of each prompt's expert logits *is* the expert.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sn40l_emu.engine.layer_reuse import layer_of
from sn40l_emu.engine.program_book import GroupPrograms
from sn40l_emu.errors import ConfigError
from sn40l_emu.program import Op, Program
from sn40l_emu.workload import ExecMode, ModelConfig, ShardPlan, Step, build_group_programs
from sn40l_emu.workload.router_head import route_head_op


def router_ops(prefill_ops: Sequence[Op], head: Op) -> list[Op]:
    """A prefill program's ops up to its last decoder layer, then the expert-choice head."""
    last = max((i for i, op in enumerate(prefill_ops) if layer_of(op) is not None), default=None)
    if last is None:
        raise ConfigError("model.num_hidden_layers", 0, "a router with at least one decoder layer")
    return [*prefill_ops[:last + 1], head]


class RouterPrograms:
    """The router's per-socket programs for a batch shape, timing or functional (memoised)."""

    def __init__(self, model: ModelConfig, plan: ShardPlan, mode: ExecMode, n_experts: int,
                 book: GroupPrograms) -> None:
        self.model, self.plan, self.mode, self.n_experts, self.book = model, plan, mode, n_experts, book
        self._memo: dict[tuple[int, int, bool], dict[int, Program]] = {}

    def group(self, batch: int, prompt_len: int, *, functional: bool = False) -> dict[int, Program]:
        key = (batch, prompt_len, functional)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        step = Step.prefill(batch, prompt_len)
        if functional:
            prefill = build_group_programs(self.model, self.plan, step, self.mode, functional=True)
        else:
            prefill = self.book.group(self.model, self.plan, step, self.mode)
        head = route_head_op(self.model, batch, prompt_len, self.n_experts, self.mode, functional=functional)
        progs: dict[int, Program] = {}
        built: dict[int, Program] = {}  # symmetric ranks share one program object, as the book's do
        for s, p in prefill.items():
            if id(p) not in built:
                built[id(p)] = Program.of(f"router/{p.label}", router_ops(p.ops, head))
            progs[s] = built[id(p)]
        self._memo[key] = progs
        return progs


def choose_experts(expert_logits: np.ndarray) -> list[int]:
    """Each prompt's expert: the argmax of its (E,) logits (ties: the lowest id, numpy's rule)."""
    return [int(e) for e in np.argmax(expert_logits, axis=-1)]
