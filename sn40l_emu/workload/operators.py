"""Framework operators with their cost on one socket: FLOPs, bytes, stage buffer.

An :class:`OpSpec` is one operator as PyTorch would run it (an RMSNorm, a
matmul, RoPE, ...). It carries everything every execution mode needs: the
FLOPs, the weight and KV-cache bytes it streams, the activation bytes it
would read and write if its inputs and outputs lived in HBM (unfused and GPU
modes), its stage buffer if it is fused (:mod:`tiling`), and the functional
kernel with the tensor-store names it reads and writes.

FLOP counts: ``2*m*n*k`` per matmul; attention counts ``QK^T`` and ``PV``
(``2*D`` each per (query, key) pair under the causal mask) plus softmax;
elementwise operators count the arithmetic per element below. They are
small next to the matmuls but never zero, so every stage has work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sn40l_emu.units import ceil_div
from sn40l_emu.workload import functional as fk
from sn40l_emu.workload import tiling
from sn40l_emu.workload.step import Step

RMSNORM_FLOPS_PER_ELEM = 4  # square, accumulate, scale by 1/rms, multiply by the weight
ADD_FLOPS_PER_ELEM = 1
ROPE_FLOPS_PER_ELEM = 3  # x*cos + rotate_half(x)*sin
SILU_MUL_FLOPS_PER_ELEM = 5  # exp, add, divide (sigmoid), times gate, times up
SOFTMAX_FLOPS_PER_SCORE = 5  # scale, max, subtract+exp, sum, divide
MOVE_FLOPS_PER_ELEM = 1  # gathers, cache writes, layout moves: one op per element
ACT_BYTES = tiling.ACT_BYTES
WEIGHT_BYTES = tiling.WEIGHT_BYTES
KV_BYTES = 2  # BF16 KV cache
TOKEN_ID_BYTES = 4  # int32 token ids

Attrs = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class OpSpec:
    """One framework operator on one socket; all quantities are exact integers."""

    name: str
    flops: int
    buffer_bytes: int
    fn: Callable[..., object]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Attrs = ()
    weight_bytes: int = 0
    kv_read_bytes: int = 0
    kv_write_bytes: int = 0
    act_read_bytes: int = 0
    act_write_bytes: int = 0


def embed_op(rows: int, hidden: int, vocab_rows: int, tp: int, vocab_start: int) -> OpSpec:
    """Vocab-parallel lookup; a socket owns on average ``rows / tp`` of the tokens' rows."""
    return OpSpec(
        name="embed",
        flops=MOVE_FLOPS_PER_ELEM * rows * hidden,
        buffer_bytes=tiling.pointwise_buffer_bytes(rows, hidden, 1, 1),
        fn=fk.embed_lookup,
        inputs=("tokens", "embed"),
        outputs=("x",),
        attrs=(("vocab_start", vocab_start),),
        weight_bytes=min(ceil_div(rows, tp), vocab_rows) * hidden * WEIGHT_BYTES,
        act_read_bytes=rows * TOKEN_ID_BYTES,
        act_write_bytes=rows * hidden * ACT_BYTES,
    )


def rmsnorm_op(
    name: str, rows: int, hidden: int, src: str, weight: str, dst: str, eps: float
) -> OpSpec:
    return OpSpec(
        name=name,
        flops=RMSNORM_FLOPS_PER_ELEM * rows * hidden,
        buffer_bytes=tiling.rowwise_buffer_bytes(rows, hidden) + hidden * WEIGHT_BYTES,
        fn=fk.rms_norm_rows,
        inputs=(src, weight),
        outputs=(dst,),
        attrs=(("eps", eps),),
        weight_bytes=hidden * WEIGHT_BYTES,
        act_read_bytes=rows * hidden * ACT_BYTES,
        act_write_bytes=rows * hidden * ACT_BYTES,
    )


def final_norm_op(batch: int, hidden: int, eps: float) -> OpSpec:
    """RMSNorm of each sequence's last token only: serving computes logits for it alone."""
    return OpSpec(
        name="final_norm",
        flops=RMSNORM_FLOPS_PER_ELEM * batch * hidden,
        buffer_bytes=tiling.rowwise_buffer_bytes(batch, hidden) + hidden * WEIGHT_BYTES,
        fn=fk.rms_norm_last,
        inputs=("x", "final_norm"),
        outputs=("h_last",),
        attrs=(("eps", eps), ("batch", batch)),
        weight_bytes=hidden * WEIGHT_BYTES,
        act_read_bytes=batch * hidden * ACT_BYTES,
        act_write_bytes=batch * hidden * ACT_BYTES,
    )


def matmul_op(name: str, rows: int, k: int, n: int, src: str, weight: str, dst: str) -> OpSpec:
    """(rows x k) @ (k x n) with the weight streamed once from memory."""
    return OpSpec(
        name=name,
        flops=2 * rows * k * n,
        buffer_bytes=tiling.matmul_buffer_bytes(rows, k, n),
        fn=fk.matmul,
        inputs=(src, weight),
        outputs=(dst,),
        weight_bytes=k * n * WEIGHT_BYTES,
        act_read_bytes=rows * k * ACT_BYTES,
        act_write_bytes=rows * n * ACT_BYTES,
    )


def rope_op(
    name: str, step: Step, q_heads: int, kv_heads: int, head_dim: int, theta: float
) -> OpSpec:
    """Rotate Q and K in place; V is not touched, so not counted."""
    rows = step.tokens
    width = (q_heads + kv_heads) * head_dim
    return OpSpec(
        name=name,
        flops=ROPE_FLOPS_PER_ELEM * rows * width,
        buffer_bytes=tiling.pointwise_buffer_bytes(rows, width, 1, 1),
        fn=fk.rope_qkv,
        inputs=("qkv", "positions"),
        outputs=("qkv",),
        attrs=(*_head_attrs(step, q_heads, kv_heads, head_dim), ("theta", theta)),
        act_read_bytes=rows * width * ACT_BYTES,
        act_write_bytes=rows * width * ACT_BYTES,
    )


def kv_write_op(layer: int, step: Step, q_heads: int, kv_heads: int, head_dim: int) -> OpSpec:
    """Write the new tokens' K and V into the layer's cache (prefill creates it)."""
    rows = step.tokens
    elems = rows * 2 * kv_heads * head_dim
    caches = (f"L{layer}.k_cache", f"L{layer}.v_cache")
    first = step.context_len == 0
    return OpSpec(
        name=f"L{layer}.kv_write",
        flops=MOVE_FLOPS_PER_ELEM * elems,
        buffer_bytes=tiling.pointwise_buffer_bytes(rows, kv_heads * head_dim, 2, 0),
        fn=fk.kv_init if first else fk.kv_append,
        inputs=("qkv",) if first else ("qkv", *caches),
        outputs=caches,
        attrs=_head_attrs(step, q_heads, kv_heads, head_dim),
        kv_write_bytes=elems * KV_BYTES,
        act_read_bytes=elems * ACT_BYTES,
    )


def attention_op(layer: int, step: Step, q_heads: int, kv_heads: int, head_dim: int) -> OpSpec:
    """Flash-style causal attention: the cached past streams from memory, new K/V from the step."""
    rows = step.tokens
    scores = step.batch * q_heads * step.attended_pairs_per_sequence
    kv_width = kv_heads * head_dim
    return OpSpec(
        name=f"L{layer}.attention",
        flops=2 * 2 * head_dim * scores + SOFTMAX_FLOPS_PER_SCORE * scores,
        buffer_bytes=tiling.attention_buffer_bytes(
            rows, step.total_len, q_heads, kv_heads, head_dim
        ),
        fn=fk.attention,
        inputs=("qkv", f"L{layer}.k_cache", f"L{layer}.v_cache", "positions"),
        outputs=("attn",),
        attrs=_head_attrs(step, q_heads, kv_heads, head_dim),
        kv_read_bytes=step.batch * step.context_len * 2 * kv_width * KV_BYTES,
        act_read_bytes=rows * (q_heads * head_dim + 2 * kv_width) * ACT_BYTES,
        act_write_bytes=rows * q_heads * head_dim * ACT_BYTES,
    )


def add_op(name: str, rows: int, hidden: int, a: str, b: str, dst: str) -> OpSpec:
    return OpSpec(
        name=name,
        flops=ADD_FLOPS_PER_ELEM * rows * hidden,
        buffer_bytes=tiling.pointwise_buffer_bytes(rows, hidden, 2, 1),
        fn=fk.add,
        inputs=(a, b),
        outputs=(dst,),
        act_read_bytes=2 * rows * hidden * ACT_BYTES,
        act_write_bytes=rows * hidden * ACT_BYTES,
    )


def silu_mul_op(layer: int, rows: int, ffn: int) -> OpSpec:
    return OpSpec(
        name=f"L{layer}.silu_mul",
        flops=SILU_MUL_FLOPS_PER_ELEM * rows * ffn,
        buffer_bytes=tiling.pointwise_buffer_bytes(rows, ffn, 2, 1),
        fn=fk.silu_mul_halves,
        inputs=("gate_up",),
        outputs=("act",),
        act_read_bytes=rows * 2 * ffn * ACT_BYTES,
        act_write_bytes=rows * ffn * ACT_BYTES,
    )


def unshard_op(batch: int, tp: int, vocab_per_socket: int, vocab_size: int) -> OpSpec:
    """Reorder the gathered (tp*B, V/tp) logits to (B, V) and drop the vocabulary padding."""
    padded = tp * vocab_per_socket
    return OpSpec(
        name="logits_unshard",
        flops=MOVE_FLOPS_PER_ELEM * batch * padded,
        buffer_bytes=tiling.pointwise_buffer_bytes(batch, padded, 1, 1),
        fn=fk.unshard_logits,
        inputs=("logits_local",),
        outputs=("logits",),
        attrs=(("tp", tp), ("batch", batch), ("vocab_size", vocab_size)),
        act_read_bytes=batch * padded * ACT_BYTES,
        act_write_bytes=batch * vocab_size * ACT_BYTES,
    )


def _head_attrs(step: Step, q_heads: int, kv_heads: int, head_dim: int) -> Attrs:
    return (
        ("q_heads", q_heads), ("kv_heads", kv_heads), ("head_dim", head_dim), ("batch", step.batch)
    )
