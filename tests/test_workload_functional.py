"""Functional mode: TP-sharded programs compute the numpy reference's numbers.

A small lockstep executor stands in for the sockets and the collectives:
every rank runs op i, and at a CollectiveOp the buffers are summed (all-reduce)
or concatenated in rank order (all-gather) across ranks. Tolerance: float32
programs differ from the reference only in summation order (partial sums
all-reduced), so logits agree to rtol 1e-4 / atol 1e-4 (logits are O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

from sn40l_emu.program import CollectiveKind, CollectiveOp, KernelOp, Program
from sn40l_emu.workload import ExecMode, Step, build_group_programs, load_model, make_plan
from sn40l_emu.workload.functional import shard_weights
from sn40l_emu.workload.model_config import ModelConfig
from sn40l_emu.workload.reference import ReferenceModel, make_weights
from sn40l_emu.workload.sharding import ShardPlan

RTOL = 1e-4
ATOL = 1e-4
BATCH = 2
PROMPT_LEN = 5
NEW_TOKENS = 18  # one from prefill, then 17 decode steps


def run_lockstep(programs: list[Program], stores: list[dict[str, np.ndarray]]) -> None:
    """Run all ranks' programs op by op; collectives combine the ranks' buffers."""
    for ops in zip(*(p.ops for p in programs), strict=True):
        first = ops[0]
        if isinstance(first, CollectiveOp):
            parts = [store[first.buffer] for store in stores]
            assert all(part.shape == first.shape for part in parts)
            if first.kind is CollectiveKind.ALL_REDUCE:
                total = parts[0].copy()
                for part in parts[1:]:
                    total += part
                result = total
            else:
                assert first.kind is CollectiveKind.ALL_GATHER
                result = np.concatenate(parts, axis=0)
            for store in stores:
                store[first.buffer] = result.copy()
            continue
        for op, store in zip(ops, stores, strict=True):
            assert isinstance(op, KernelOp) and op.fn is not None
            out = op.fn(*[store[n] for n in op.inputs], **dict(op.attrs))
            if len(op.outputs) == 1:
                store[op.outputs[0]] = out  # type: ignore[assignment]
            else:
                assert isinstance(out, tuple)
                store.update(zip(op.outputs, out, strict=True))


class ShardedModel:
    """Greedy generation through the per-socket programs of a ShardPlan."""

    def __init__(self, model: ModelConfig, plan: ShardPlan, weights: dict[str, np.ndarray],
                 mode: ExecMode) -> None:
        self.model, self.plan, self.mode = model, plan, mode
        self.stores = [shard_weights(weights, plan, r) for r in range(plan.tp)]
        self.context_len = 0

    def _step(self, step: Step, tokens: np.ndarray) -> np.ndarray:
        programs = build_group_programs(self.model, self.plan, step, self.mode, functional=True)
        positions = np.arange(self.context_len, self.context_len + tokens.shape[1])
        for store in self.stores:
            store["tokens"] = tokens
            store["positions"] = positions
        run_lockstep([programs[s] for s in self.plan.group], self.stores)
        self.context_len += tokens.shape[1]
        logits = self.stores[0]["logits"]
        for store in self.stores[1:]:
            np.testing.assert_array_equal(store["logits"], logits)
        return logits

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        return self._step(Step.prefill(tokens.shape[0], tokens.shape[1]), tokens)

    def decode(self, token: np.ndarray) -> np.ndarray:
        return self._step(Step.decode(token.shape[0], self.context_len), token.reshape(-1, 1))


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gqa"])
def model_and_weights(request: pytest.FixtureRequest) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    model = load_model(request.param)
    return model, make_weights(model, seed=1234)


@pytest.mark.parametrize("mode", [ExecMode.UNFUSED, ExecMode.FUSED_HO])
@pytest.mark.parametrize("tp", [pytest.param(1, marks=pytest.mark.slow), 2,
                                pytest.param(4, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)])
def test_sharded_programs_match_reference(
    model_and_weights: tuple[ModelConfig, dict[str, np.ndarray]], tp: int, mode: ExecMode
) -> None:
    model, weights = model_and_weights
    prompt = np.random.default_rng(7).integers(0, model.vocab_size, (BATCH, PROMPT_LEN))
    ref = ReferenceModel(model, weights)
    sharded = ShardedModel(model, make_plan(model, tp), weights, mode)

    ref_logits, got = ref.prefill(prompt), sharded.prefill(prompt)
    np.testing.assert_allclose(got, ref_logits, rtol=RTOL, atol=ATOL)
    ref_tokens, got_tokens = [np.argmax(ref_logits, -1)], [np.argmax(got, -1)]
    for _ in range(NEW_TOKENS - 1):
        ref_logits = ref.decode(ref_tokens[-1])
        got = sharded.decode(got_tokens[-1])
        np.testing.assert_allclose(got, ref_logits, rtol=RTOL, atol=ATOL)
        ref_tokens.append(np.argmax(ref_logits, -1))
        got_tokens.append(np.argmax(got, -1))
    np.testing.assert_array_equal(np.stack(got_tokens, 1), np.stack(ref_tokens, 1))
    np.testing.assert_array_equal(np.stack(ref_tokens, 1), ReferenceModel(model, weights)
                                  .generate(prompt, NEW_TOKENS))
    assert sharded.stores[0]["L0.k_cache"].shape == (
        BATCH, PROMPT_LEN + NEW_TOKENS - 1, make_plan(model, tp).kv_heads_per_socket, model.head_dim
    )


def test_gpu_and_fused_so_modes_compute_the_same_logits() -> None:
    model = load_model("tiny-gqa")
    weights = make_weights(model, seed=3)
    prompt = np.arange(BATCH * PROMPT_LEN).reshape(BATCH, PROMPT_LEN) % model.vocab_size
    plan = make_plan(model, 4)
    results = [ShardedModel(model, plan, weights, mode).prefill(prompt)
               for mode in (ExecMode.GPU, ExecMode.FUSED_SO, ExecMode.UNFUSED)]
    for got in results[1:]:
        np.testing.assert_allclose(got, results[0], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_functional_programs_have_identical_timing_fields() -> None:
    model = load_model("tiny-gqa")
    plan = make_plan(model, 8)
    for mode in ExecMode:
        for step in (Step.prefill(2, 7), Step.decode(2, 9)):
            timing = build_group_programs(model, plan, step, mode)
            func = build_group_programs(model, plan, step, mode, functional=True)
            for socket in plan.group:
                for a, b in zip(timing[socket].ops, func[socket].ops, strict=True):
                    if isinstance(a, KernelOp):
                        assert isinstance(b, KernelOp) and b.fn is not None and a.fn is None
                        assert (a.name, a.stages, a.streams, a.launch, a.fused) == (
                            b.name, b.stages, b.streams, b.launch, b.fused)
                    else:
                        assert isinstance(a, CollectiveOp) and isinstance(b, CollectiveOp)
                        assert a.buffer == "" and b.buffer != ""
                        assert (a.name, a.kind, a.group, a.shape, a.dtype) == (
                            b.name, b.kind, b.group, b.shape, b.dtype)
