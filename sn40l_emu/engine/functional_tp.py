"""Functional mode on a node: real numpy tensors through the sockets' programs.

The same per-socket programs as timing mode, built with ``functional=True``, so
each kernel also carries its numpy function. The driver puts the tokens and
positions in every socket's tensor store (the contract of
:mod:`sn40l_emu.workload.functional`), runs the programs on the node — the
collectives move the real partial sums over the P2P layer — and reads the
logits back from the first socket of the group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from sn40l_emu.cluster.node import Node, TensorNode
from sn40l_emu.program import Program
from sn40l_emu.workload import ExecMode, ModelConfig, ShardPlan, Step, build_group_programs
from sn40l_emu.workload.functional import shard_weights


class FunctionalNode(Node, TensorNode, Protocol):
    """What functional mode needs of a node: programs and real tensors."""


class TPGenerator:
    """Greedy generation of one model, TP-sharded over ``plan.group`` of ``node``."""

    def __init__(self, node: FunctionalNode, model: ModelConfig, plan: ShardPlan, mode: ExecMode) -> None:
        self.node, self.model, self.plan, self.mode = node, model, plan, mode
        self.context_len = 0
        self.last_results: dict[int, object] = {}
        self._programs: dict[Step, dict[int, Program]] = {}

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Shard full weights and place each socket's shard in its store."""
        self.load_shards({s: shard_weights(dict(weights), self.plan, r) for r, s in enumerate(self.plan.group)})

    def load_shards(self, shards: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        self.node.load_tensors(shards)

    def _step(self, step: Step, tokens: np.ndarray) -> np.ndarray:
        progs = self._programs.get(step)
        if progs is None:
            progs = build_group_programs(self.model, self.plan, step, self.mode, functional=True)
            self._programs[step] = progs
        positions = np.arange(self.context_len, self.context_len + tokens.shape[1], dtype=np.int64)
        self.node.load_tensors({s: {"tokens": tokens, "positions": positions} for s in self.plan.group})
        self.last_results = dict(self.node.run_programs(progs))
        self.context_len += tokens.shape[1]
        return self.node.get_tensors(self.plan.group[0], ["logits"])["logits"]

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        self.context_len = 0
        return self._step(Step.prefill(tokens.shape[0], tokens.shape[1]), tokens)

    def decode(self, token: np.ndarray) -> np.ndarray:
        tok = np.asarray(token, dtype=np.int64).reshape(-1, 1)
        return self._step(Step.decode(tok.shape[0], self.context_len), tok)

    def generate(self, tokens: np.ndarray, new_tokens: int) -> np.ndarray:
        """(B, new_tokens) greedy tokens: one from the prefill, then decode steps."""
        out = [np.argmax(self.prefill(tokens), axis=-1)]
        while len(out) < new_tokens:
            out.append(np.argmax(self.decode(out[-1]), axis=-1))
        return np.stack(out, axis=1)
