"""The model as one socket sees it: sections of operators between collectives.

A decoder layer is one kernel (docs/model.md §1 "Fused") cut into sections by its
two all-reduces, which run over P2P pipelined inside that kernel::

    kernel L{i}.decoder:  [attn]  --all-reduce attn_out-->  [ffn]  --all-reduce ffn_out-->  [out]
      attn = attn_norm, qkv_proj, rope, kv_write, attention, o_proj
      ffn  = attn_residual, ffn_norm, gate_up, silu_mul, down
      out  = ffn_residual

around them: ``embed`` (lookup, all-reduce ``x``) and ``lm_head`` (final_norm,
lm_head, all-gather ``logits_local``, unshard). With ``tp == 1`` there are no
collectives. How sections become kernels is the execution mode's business
(:mod:`programs`); this module only says what is computed and what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.program import CollectiveKind
from sn40l_emu.workload import operators as ops
from sn40l_emu.workload.operators import ACT_BYTES, TOKEN_ID_BYTES, OpSpec
from sn40l_emu.workload.sharding import ShardPlan
from sn40l_emu.workload.step import Step


@dataclass(frozen=True)
class Section:
    """Operators with no collective between them, part ``part`` of kernel ``kernel``.

    When fused, only the kernel's own input and output activations go off
    chip: ``fused_act_read_bytes`` / ``fused_act_write_bytes`` of this section.
    """

    kernel: str
    part: str
    ops: tuple[OpSpec, ...]
    fused_act_read_bytes: int = 0
    fused_act_write_bytes: int = 0


@dataclass(frozen=True)
class CollectiveSpec:
    """A collective between sections; ``buffer`` is the tensor-store entry it works on.

    ``shape`` is the buffer each rank holds when the collective starts (as the
    socket passes it to :mod:`sn40l_emu.collectives`): for the all-gather that
    is the rank's shard (B, V/tp); the gathered result is (tp*B, V/tp).
    """

    name: str
    kind: CollectiveKind
    shape: tuple[int, ...]
    buffer: str


Item = Section | CollectiveSpec

# Tensor-store names that live only inside a decoder layer or the head: a fused
# kernel keeps them on chip and never writes them back to the store.
ON_CHIP = frozenset({"h", "qkv", "attn", "gate_up", "act", "h_last"})


def socket_graph(plan: ShardPlan, step: Step, rank_index: int) -> tuple[Item, ...]:
    """Everything socket ``rank_index`` of ``plan`` computes for ``step``, in order."""
    model = plan.model
    rows, hidden = step.tokens, model.hidden_size
    embed = ops.embed_op(rows, hidden, plan.vocab_per_socket, plan.tp, plan.vocab_start(rank_index))
    items: list[Item] = [
        Section(
            "embed", "lookup", (embed,),
            fused_act_read_bytes=rows * TOKEN_ID_BYTES,
            fused_act_write_bytes=rows * hidden * ACT_BYTES,
        )
    ]
    _collective(items, plan, "embed_allreduce", CollectiveKind.ALL_REDUCE, (rows, hidden), "x")
    for layer in range(model.num_hidden_layers):
        _decoder_layer(items, plan, step, layer)
    items.append(
        Section(
            "lm_head", "logits",
            (
                ops.final_norm_op(step.batch, hidden, model.rms_norm_eps),
                ops.matmul_op("lm_head", step.batch, hidden, plan.vocab_per_socket,
                              "h_last", "lm_head", "logits_local"),
            ),
            fused_act_read_bytes=step.batch * hidden * ACT_BYTES,
        )
    )
    _collective(items, plan, "logits_allgather", CollectiveKind.ALL_GATHER,
                (step.batch, plan.vocab_per_socket), "logits_local")
    items.append(
        Section(
            "lm_head", "unshard",
            (ops.unshard_op(step.batch, plan.tp, plan.vocab_per_socket, model.vocab_size),),
            fused_act_write_bytes=step.batch * model.vocab_size * ACT_BYTES,
        )
    )
    return tuple(items)


def _decoder_layer(items: list[Item], plan: ShardPlan, step: Step, layer: int) -> None:
    model = plan.model
    rows, hidden, d = step.tokens, model.hidden_size, model.head_dim
    hq, hkv, ffn = plan.q_heads_per_socket, plan.kv_heads_per_socket, plan.ffn_per_socket
    eps, p, kernel = model.rms_norm_eps, f"L{layer}.", f"L{layer}.decoder"
    attn = (
        ops.rmsnorm_op(p + "attn_norm", rows, hidden, "x", p + "attn_norm", "h", eps),
        ops.matmul_op(p + "qkv_proj", rows, hidden, plan.qkv_width_per_socket,
                      "h", p + "wqkv", "qkv"),
        ops.rope_op(p + "rope", step, hq, hkv, d, model.rope_theta),
        ops.kv_write_op(layer, step, hq, hkv, d),
        ops.attention_op(layer, step, hq, hkv, d),
        ops.matmul_op(p + "o_proj", rows, plan.q_width_per_socket, hidden,
                      "attn", p + "wo", "attn_out"),
    )
    items.append(Section(kernel, "attn", attn, fused_act_read_bytes=rows * hidden * ACT_BYTES))
    _collective(items, plan, p + "attn_allreduce", CollectiveKind.ALL_REDUCE,
                (rows, hidden), "attn_out")
    ffn_ops = (
        ops.add_op(p + "attn_residual", rows, hidden, "x", "attn_out", "x"),
        ops.rmsnorm_op(p + "ffn_norm", rows, hidden, "x", p + "ffn_norm", "h", eps),
        ops.matmul_op(p + "gate_up", rows, hidden, 2 * ffn, "h", p + "w_gate_up", "gate_up"),
        ops.silu_mul_op(layer, rows, ffn),
        ops.matmul_op(p + "down", rows, ffn, hidden, "act", p + "w_down", "ffn_out"),
    )
    items.append(Section(kernel, "ffn", ffn_ops))
    _collective(items, plan, p + "ffn_allreduce", CollectiveKind.ALL_REDUCE,
                (rows, hidden), "ffn_out")
    out = (ops.add_op(p + "ffn_residual", rows, hidden, "x", "ffn_out", "x"),)
    items.append(Section(kernel, "out", out, fused_act_write_bytes=rows * hidden * ACT_BYTES))


def _collective(
    items: list[Item], plan: ShardPlan, name: str, kind: CollectiveKind,
    shape: tuple[int, ...], buffer: str,
) -> None:
    """A collective over the plan's group; a group of one needs none."""
    if plan.tp > 1:
        items.append(CollectiveSpec(name, kind, shape, buffer))
