"""Functional TP over real socket models: sharded numpy programs on a node match the reference.

The driver loads each rank's weight shard into its socket's tensor store,
writes ``tokens`` / ``positions`` before every step, runs the group's
functional programs on the node (collectives over the node's P2P transport)
and reads ``logits`` back from the first rank. Tolerance as in
``test_workload_functional.py``: float32 partial sums all-reduced in another
order agree to rtol/atol 1e-4. One run goes through Ray actors (tier 2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from sn40l_emu.cluster.node import LocalNode, Node
from sn40l_emu.config import load_profile
from sn40l_emu.workload import ExecMode, ModelConfig, Step, build_group_programs, load_model, make_plan
from sn40l_emu.workload.functional import shard_weights
from sn40l_emu.workload.reference import ReferenceModel, Weights, make_weights

# real tensors through TP programs on a node: the slow tier
pytestmark = pytest.mark.slow

RTOL = ATOL = 1e-4
BATCH, PROMPT_LEN, DECODE_STEPS = 2, 5, 16
PROFILE = load_profile("sn40l")


def generate_on_node(node: Node, model: ModelConfig, weights: Weights, tp: int, prompt: np.ndarray,
                     decode_steps: int, mode: ExecMode) -> list[np.ndarray]:
    """Greedy prefill + ``decode_steps`` decode steps on ``node``; the logits of every step."""
    plan = make_plan(model, tp)
    node.load_tensors({s: shard_weights(weights, plan, r) for r, s in enumerate(plan.group)})
    tokens, cached, out = prompt, 0, []
    for i in range(decode_steps + 1):
        step = Step.prefill(*prompt.shape) if i == 0 else Step.decode(prompt.shape[0], cached)
        positions = np.arange(cached, cached + tokens.shape[1], dtype=np.int64)
        node.load_tensors({s: {"tokens": tokens, "positions": positions} for s in plan.group})
        node.run_programs(build_group_programs(model, plan, step, mode, functional=True))
        cached += tokens.shape[1]
        logits = node.get_tensors(plan.group[0], ["logits"])["logits"]
        out.append(logits)
        tokens = np.argmax(logits, axis=-1).reshape(-1, 1)
    return out


def check_against_reference(model: ModelConfig, weights: Weights, prompt: np.ndarray,
                            got: list[np.ndarray]) -> None:
    """Same logits (within tolerance) and the same greedy tokens as the single-process reference."""
    ref = ReferenceModel(model, weights)
    want = [ref.prefill(prompt)]
    for _ in range(len(got) - 1):
        want.append(ref.decode(np.argmax(want[-1], axis=-1)))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"step {i}")
        np.testing.assert_array_equal(np.argmax(g, -1), np.argmax(w, -1))
    tokens = np.stack([np.argmax(g, -1) for g in got], axis=1)
    np.testing.assert_array_equal(tokens, ReferenceModel(model, weights).generate(prompt, len(got)))


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gqa"])
def model_weights_prompt(request: pytest.FixtureRequest) -> tuple[ModelConfig, Weights, np.ndarray]:
    model = load_model(request.param)
    prompt = np.random.default_rng(7).integers(0, model.vocab_size, (BATCH, PROMPT_LEN))
    return model, make_weights(model, seed=1234), prompt


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_tp_on_local_node_matches_reference(
    model_weights_prompt: tuple[ModelConfig, Weights, np.ndarray], tp: int
) -> None:
    model, weights, prompt = model_weights_prompt
    mode = ExecMode.UNFUSED if tp == 2 else ExecMode.FUSED_HO  # both lowerings run on sockets
    node = LocalNode(PROFILE, trace=False)
    try:
        got = generate_on_node(node, model, weights, tp, prompt, DECODE_STEPS, mode)
    finally:
        node.close()
    check_against_reference(model, weights, prompt, got)
    clocks = node.clocks()
    assert all(c > 0 for c in clocks[:tp]) and all(c == 0 for c in clocks[tp:])


@pytest.fixture(scope="module")
def ray_node(ray_session: None) -> Iterator[Node]:
    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(PROFILE, trace=False)
    yield node
    node.close()


@pytest.mark.ray
def test_tp8_on_ray_actors_matches_reference_and_local_timing(ray_node: Node) -> None:
    """Functional TP8 (KV heads replicated) over socket actors; then a timing row on both backends."""
    from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling

    model = load_model("tiny-gqa")
    weights = make_weights(model, seed=1234)
    prompt = np.random.default_rng(7).integers(0, model.vocab_size, (BATCH, PROMPT_LEN))
    got = generate_on_node(ray_node, model, weights, 8, prompt, DECODE_STEPS, ExecMode.FUSED_HO)
    check_against_reference(model, weights, prompt, got)

    class _Borrowed:  # run_scaling's node factory: lend the module's node, close nothing
        def __init__(self, n_sockets: int) -> None:
            assert n_sockets == ray_node.n_sockets

        def __enter__(self) -> Node:
            return ray_node

        def __exit__(self, *exc: object) -> None:
            return None

    cfg = ScalingConfig(tps=(8,), phases=("decode",), modes=("fused-ho",), tokens=4)
    on_ray = run_scaling(cfg, node_factory=_Borrowed)
    local = run_scaling(cfg)
    assert on_ray == local
