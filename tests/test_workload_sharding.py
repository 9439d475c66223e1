"""TP sharding plan: head/FFN/vocab splits, replicated KV heads, clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sn40l_emu.errors import ShardingError
from sn40l_emu.workload import load_model, make_plan
from sn40l_emu.workload.functional import shard_weights
from sn40l_emu.workload.reference import make_weights


def test_llama31_8b_tp8_splits_kv_heads() -> None:
    plan = make_plan(load_model("llama3.1-8b"), 8)
    assert plan.group == tuple(range(8))
    assert (plan.q_heads_per_socket, plan.kv_heads_per_socket, plan.kv_replication) == (4, 1, 1)
    assert plan.ffn_per_socket == 14336 // 8
    assert plan.vocab_per_socket * 8 == 128256 == plan.vocab_padded


def test_llama31_8b_tp16_replicates_kv_heads() -> None:
    plan = make_plan(load_model("llama3.1-8b"), 16, group=tuple(range(100, 116)))
    assert plan.kv_heads_replicated and plan.kv_replication == 2
    assert plan.q_heads_per_socket == 2 and plan.kv_heads_per_socket == 1
    # sockets 2r and 2r+1 share KV head r; their query heads 4r..4r+3 all use it
    assert [plan.kv_head_start(r) for r in range(16)] == [r // 2 for r in range(16)]
    assert plan.rank_of(105) == 5


@pytest.mark.parametrize(("tp", "replication"), [(1, 1), (2, 1), (4, 2), (8, 4)])
def test_tiny_gqa_replication(tp: int, replication: int) -> None:
    model = load_model("tiny-gqa")
    plan = make_plan(model, tp)
    assert plan.kv_replication == replication
    group = model.num_attention_heads // model.num_key_value_heads
    for r in range(tp):
        q_heads = range(plan.q_head_start(r), plan.q_head_start(r) + plan.q_heads_per_socket)
        kv_heads = range(plan.kv_head_start(r), plan.kv_head_start(r) + plan.kv_heads_per_socket)
        assert {q // group for q in q_heads} == set(kv_heads)


def test_vocab_is_padded_to_a_multiple_of_tp() -> None:
    plan = make_plan(load_model("tiny-gqa"), 8)  # vocab 300
    assert plan.vocab_padded == 304 and plan.vocab_per_socket == 38


@pytest.mark.parametrize(
    ("name", "tp", "message"),
    [
        ("llama3.1-8b", 3, "tp=3 is not supported"),
        ("llama3.1-8b", 32, "not supported"),
        ("tiny-gqa", 16, "num_attention_heads=8"),
        ("tiny-llama", 16, "num_attention_heads=8"),
    ],
)
def test_unsplittable_raises(name: str, tp: int, message: str) -> None:
    with pytest.raises(ShardingError, match=message):
        make_plan(load_model(name), tp)


def test_bad_kv_and_ffn_splits_raise() -> None:
    base = load_model("tiny-llama")
    with pytest.raises(ShardingError, match="intermediate_size=170"):
        make_plan(dataclasses.replace(base, intermediate_size=170), 4)
    odd_kv = dataclasses.replace(base, num_attention_heads=24, num_key_value_heads=6)
    with pytest.raises(ShardingError, match="num_key_value_heads=6 does not split"):
        make_plan(odd_kv, 4)
    with pytest.raises(ShardingError, match="cannot be replicated"):
        make_plan(odd_kv, 8)
    with pytest.raises(ShardingError, match="distinct"):
        make_plan(base, 2, group=(3, 3))


@pytest.mark.parametrize(
    ("name", "tp"),
    [("llama2-7b", 8), ("llama3.1-8b", 8), ("llama3.1-8b", 16), ("llama3.1-70b", 8),
     ("llama3.1-405b", 16), ("mistral-7b", 4), ("tiny-gqa", 8)],
)
def test_per_socket_bytes_cover_the_model(name: str, tp: int) -> None:
    model = load_model(name)
    plan = make_plan(model, tp)
    total = tp * plan.weight_bytes_per_socket
    assert total >= model.weight_bytes
    # the excess is only replicated norms, replicated KV heads and vocabulary padding
    layers, h = model.num_hidden_layers, model.hidden_size
    replicated_kv = (tp * plan.kv_width_per_socket - model.kv_width) * 2 * h * layers
    norms = (tp - 1) * (2 * layers + 1) * h
    padding = (plan.vocab_padded - model.vocab_size) * h * 2
    assert total - model.weight_bytes == 2 * (replicated_kv + norms + padding)
    assert tp * plan.kv_bytes_per_token_per_socket == model.kv_bytes_per_token * plan.kv_replication


def test_shard_weights_shapes_and_bytes() -> None:
    model = load_model("tiny-gqa")
    weights = make_weights(model, seed=0)
    for tp in (1, 2, 4, 8):
        plan = make_plan(model, tp)
        shard = shard_weights(weights, plan, tp - 1)
        assert shard["L0.wqkv"].shape == (model.hidden_size, plan.qkv_width_per_socket)
        assert shard["L0.w_gate_up"].shape == (model.hidden_size, 2 * plan.ffn_per_socket)
        assert shard["embed"].shape == (plan.vocab_per_socket, model.hidden_size)
        n_values = sum(a.size for a in shard.values())
        assert 2 * n_values == plan.weight_bytes_per_socket
    last = shard_weights(weights, make_plan(model, 8), 7)
    assert np.all(last["embed"][-4:] == 0) and np.all(last["lm_head"][:, -4:] == 0)
