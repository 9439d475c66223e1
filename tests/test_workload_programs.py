"""Per-socket programs: kernel structure per mode, exact bytes and FLOPs, memory plans."""

from __future__ import annotations

import pickle

import pytest

from sn40l_emu.errors import ConfigError, ShardingError
from sn40l_emu.program import (
    AllocOp,
    CollectiveKind,
    CollectiveOp,
    KernelOp,
    Launch,
    Program,
    StreamKind,
    Tier,
)
from sn40l_emu.units import MiB
from sn40l_emu.workload import (
    ExecMode,
    Placement,
    Step,
    build_decode_program,
    build_group_programs,
    build_prefill_program,
    build_program,
    load_model,
    make_plan,
    memory_plan,
)

SRAM_BYTES = 520 * MiB  # docs/model.md §1
DECODE = Step.decode(8, 1024)
PREFILL = Step.prefill(8, 2048)


def kernels(program: Program) -> list[KernelOp]:
    return [op for op in program.ops if isinstance(op, KernelOp)]


def launches(program: Program) -> int:
    return sum(1 for k in kernels(program) if k.launch is not Launch.NONE)


def collectives(program: Program) -> list[CollectiveOp]:
    return [op for op in program.ops if isinstance(op, CollectiveOp)]


def stream_bytes(program: Program, kind: StreamKind, write: bool | None = None) -> int:
    return sum(s.size_bytes for k in kernels(program) for s in k.streams
               if s.kind is kind and (write is None or s.write is write))


@pytest.mark.parametrize(("name", "tp"), [("llama2-7b", 8), ("llama3.1-70b", 8),
                                          ("llama3.1-8b", 16), ("mistral-7b", 2)])
@pytest.mark.parametrize("mode", list(ExecMode))
def test_decode_streams_the_socket_share_of_weights(name: str, tp: int, mode: ExecMode) -> None:
    model = load_model(name)
    plan = make_plan(model, tp)
    program = build_program(model, plan, DECODE, mode, rank_index=tp - 1)
    weights = stream_bytes(program, StreamKind.WEIGHTS)
    # every weight once, except the embedding table, of which only the looked-up rows
    rows_read = -(-DECODE.tokens // tp)
    embed_read = rows_read * model.hidden_size * 2
    assert weights == plan.weight_bytes_per_socket - plan.embed_bytes_per_socket + embed_read
    no_embed = (model.weight_bytes - model.embedding_param_count * 2) / tp
    # a replicated KV head costs its full K and V columns on every socket sharing it
    kv_cols = plan.kv_width_per_socket
    extra = 2 * model.hidden_size * (kv_cols - kv_cols // plan.kv_replication) * 2
    assert weights == pytest.approx(no_embed + extra * model.num_hidden_layers, rel=0.005)
    # the cached past is read once, the new token written once
    assert stream_bytes(program, StreamKind.KV, write=False) == (
        DECODE.batch * DECODE.context_len * plan.kv_bytes_per_token_per_socket)
    assert stream_bytes(program, StreamKind.KV, write=True) == (
        DECODE.batch * plan.kv_bytes_per_token_per_socket)


def test_kernel_counts_per_mode() -> None:
    model = load_model("llama3.1-8b")
    plan = make_plan(model, 8)
    layers = model.num_hidden_layers
    progs = {m: build_program(model, plan, DECODE, m, 0) for m in ExecMode}
    # GPU / unfused: 12 kernels per decoder layer + embed, final_norm, lm_head, unshard
    for mode in (ExecMode.GPU, ExecMode.UNFUSED):
        assert launches(progs[mode]) == len(kernels(progs[mode])) == 12 * layers + 4
        assert all(not k.fused and len(k.stages) == 1 for k in kernels(progs[mode]))
    gpu_launch = {k.launch for k in kernels(progs[ExecMode.GPU])}
    assert gpu_launch == {Launch.GPU}
    assert {k.launch for k in kernels(progs[ExecMode.UNFUSED])} == {Launch.SO}
    # fused: one launch per layer (+ embed, lm_head), three sections around two all-reduces
    for mode, first in ((ExecMode.FUSED_SO, Launch.SO), (ExecMode.FUSED_HO, Launch.HO)):
        prog = progs[mode]
        assert launches(prog) == layers + 2 < launches(progs[ExecMode.UNFUSED])
        assert len(kernels(prog)) == 3 * layers + 3  # lm_head is cut by the all-gather
        assert all(k.fused for k in kernels(prog))
        layer3 = [k for k in kernels(prog) if k.name.startswith("L3.")]
        assert [k.launch for k in layer3] == [first, Launch.NONE, Launch.NONE]
        assert [len(k.stages) for k in layer3] == [6, 5, 1]
    # every mode: 2 all-reduces per layer + embedding all-reduce + logits all-gather
    for prog in progs.values():
        kinds = [c.kind for c in collectives(prog)]
        assert kinds.count(CollectiveKind.ALL_REDUCE) == 2 * layers + 1
        assert kinds[-1] is CollectiveKind.ALL_GATHER and len(kinds) == 2 * layers + 2


def test_fused_tp1_is_one_kernel_per_layer() -> None:
    model = load_model("llama2-7b")
    plan = make_plan(model, 1)
    prog = build_program(model, plan, DECODE, ExecMode.FUSED_HO, 0)
    assert not collectives(prog)
    names = [k.name for k in kernels(prog)]
    assert names[:2] == ["embed", "L0.decoder"] and names[-1] == "lm_head"
    assert len(names) == model.num_hidden_layers + 2
    assert all(k.launch is Launch.HO for k in kernels(prog))


def test_collective_ops() -> None:
    model = load_model("llama3.1-8b")
    group = tuple(range(8, 16))
    plan = make_plan(model, 8, group=group)
    prog = build_program(model, plan, PREFILL, ExecMode.FUSED_SO, 3)
    by_name = {c.name: c for c in collectives(prog)}
    ar = by_name["L3.attn_allreduce"]
    assert (ar.kind, ar.group, ar.shape, ar.dtype, ar.buffer) == (
        CollectiveKind.ALL_REDUCE, group, (PREFILL.tokens, 4096), "bfloat16", "")
    assert ar.size_bytes == PREFILL.tokens * 4096 * 2
    assert by_name["L31.ffn_allreduce"].shape == (PREFILL.tokens, 4096)
    assert by_name["embed_allreduce"].shape == (PREFILL.tokens, 4096)
    gather = by_name["logits_allgather"]
    assert gather.kind is CollectiveKind.ALL_GATHER and gather.shape == (8, 128256 // 8)
    assert prog.label.endswith("/s11")


@pytest.mark.parametrize("mode", [ExecMode.FUSED_SO, ExecMode.UNFUSED])
def test_fused_moves_only_layer_io_activations(mode: ExecMode) -> None:
    model = load_model("llama3.1-8b")
    plan = make_plan(model, 8)
    prog = build_program(model, plan, PREFILL, mode, 0)
    act = stream_bytes(prog, StreamKind.ACTIVATIONS)
    layer_io = 2 * PREFILL.tokens * model.hidden_size * 2
    if mode is ExecMode.FUSED_SO:
        layer0 = [k for k in kernels(prog) if k.name.startswith("L0.")]
        assert sum(s.size_bytes for k in layer0 for s in k.streams
                   if s.kind is StreamKind.ACTIVATIONS) == layer_io
    else:
        assert act > 10 * layer_io * model.num_hidden_layers / 2


def test_every_kernel_is_exact_and_nonzero() -> None:
    model = load_model("tiny-gqa")
    for mode in ExecMode:
        for step in (Step.prefill(3, 11), Step.decode(2, 40)):
            for prog in build_group_programs(model, make_plan(model, 4), step, mode).values():
                for k in kernels(prog):
                    assert k.stages and k.streams
                    for stage in k.stages:
                        assert type(stage.flops) is int and stage.flops > 0
                        assert type(stage.buffer_bytes) is int and stage.buffer_bytes > 0
                    for s in k.streams:
                        assert type(s.size_bytes) is int and s.size_bytes > 0


def test_matmul_and_causal_attention_flops() -> None:
    model = load_model("llama2-7b")
    plan = make_plan(model, 4)
    b, p, h, d = 2, 100, 4096, 128
    prog = build_prefill_program(model, plan, 0, b, p, ExecMode.UNFUSED)
    flops = {k.name: k.flops for k in kernels(prog)}
    assert flops["L0.qkv_proj"] == 2 * b * p * h * (3 * h // 4)
    assert flops["L0.down"] == 2 * b * p * (11008 // 4) * h
    pairs = p * (p + 1) // 2  # causal: token i sees i+1 keys
    assert flops["L0.attention"] == b * 8 * pairs * (4 * d + 5)
    dec = build_decode_program(model, plan, 0, b, 300, ExecMode.UNFUSED)
    assert {k.name: k.flops for k in kernels(dec)}["L5.attention"] == b * 8 * 301 * (4 * d + 5)
    # decode FLOPs are dominated by 2 FLOPs per weight per token
    total = sum(k.flops for k in kernels(dec))
    weight_params = (plan.weight_bytes_per_socket - plan.embed_bytes_per_socket) // 2
    assert total == pytest.approx(2 * b * weight_params, rel=0.05)


@pytest.mark.parametrize(("name", "tp"), [("llama3.1-8b", 8), ("llama3.1-70b", 8),
                                          ("llama3.1-405b", 8), ("llama3.1-405b", 1)])
@pytest.mark.parametrize("step", [Step.decode(8, 4096), Step.prefill(8, 4096)])
def test_fused_stage_buffers_fit_sram(name: str, tp: int, step: Step) -> None:
    model = load_model(name)
    prog = build_program(model, make_plan(model, tp), step, ExecMode.FUSED_HO, 0)
    per_kernel: dict[str, int] = {}
    for k in kernels(prog):
        layer = k.name.split(".")[0]
        per_kernel[layer] = per_kernel.get(layer, 0) + k.sram_bytes
    assert 1 * MiB < max(per_kernel.values()) < SRAM_BYTES


def test_placement_moves_streams() -> None:
    model = load_model("tiny-llama")
    placement = Placement(weights=Tier.DDR, activations=Tier.DDR)
    prog = build_program(model, make_plan(model, 2), DECODE, ExecMode.UNFUSED, 0,
                         placement=placement)
    tiers = {(s.kind, s.tier) for k in kernels(prog) for s in k.streams}
    assert tiers == {(StreamKind.WEIGHTS, Tier.DDR), (StreamKind.KV, Tier.HBM),
                     (StreamKind.ACTIVATIONS, Tier.DDR)}


def test_memory_plan() -> None:
    model = load_model("llama3.1-8b")
    plan = make_plan(model, 8, group=tuple(range(8, 16)))
    allocs = memory_plan(model, plan, batch=8, max_context_len=4096)
    assert sorted(allocs) == list(range(8, 16))
    by_name = {a.segment: a for a in allocs[9]}
    w = by_name["llama3.1-8b.weights"]
    assert (w.tier, w.read_only, w.size_bytes) == (Tier.HBM, True, plan.weight_bytes_per_socket)
    kv = by_name["llama3.1-8b.kv_cache"]
    assert kv.size_bytes == 8 * 4096 * 128 * 1024 // 8 and not kv.read_only
    act = by_name["llama3.1-8b.activations"]
    assert 100 * MiB < act.size_bytes < 2048 * MiB
    ddr = memory_plan(model, plan, 1, 128, placement=Placement(weights=Tier.DDR), prefix="e7.")
    assert ddr[8][0] == AllocOp("e7.weights", Tier.DDR, plan.weight_bytes_per_socket, True)


def test_programs_hash_and_pickle() -> None:
    model = load_model("tiny-gqa")
    plan = make_plan(model, 4)
    for mode in (ExecMode.UNFUSED, ExecMode.FUSED_HO):
        a = build_program(model, plan, DECODE, mode, 1)
        assert hash(a) == hash(build_program(model, plan, DECODE, mode, 1))  # cost reuse
        func = build_program(model, plan, DECODE, mode, 1, functional=True)
        assert hash(func) == hash(pickle.loads(pickle.dumps(func)))  # fns go by reference
        assert pickle.loads(pickle.dumps(func)) == func


def test_bad_arguments() -> None:
    model = load_model("tiny-llama")
    other = load_model("tiny-gqa")
    with pytest.raises(ShardingError, match="plan was made for tiny-gqa"):
        build_program(model, make_plan(other, 2), DECODE, ExecMode.GPU, 0)
    with pytest.raises(ShardingError, match="rank_index 2"):
        build_program(model, make_plan(model, 2), DECODE, ExecMode.GPU, 2)
    with pytest.raises(ConfigError, match="context_len"):
        Step.decode(1, 0)
    with pytest.raises(ConfigError, match="batch"):
        Step.prefill(0, 3)
    with pytest.raises(ConfigError, match="max_context_len"):
        memory_plan(model, make_plan(model, 2), 1, 0)
    with pytest.raises(ConfigError, match="max_position_embeddings=2048"):
        build_program(model, make_plan(model, 2), Step.decode(1, 2048), ExecMode.GPU, 0)
