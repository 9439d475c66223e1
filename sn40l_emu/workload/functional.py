"""Functional mode: real numpy kernels over a socket's tensor store.

A socket runs ``outs = op.fn(*[store[n] for n in op.inputs], **dict(op.attrs))``
for each :class:`KernelOp` and stores the result under ``op.outputs`` (a tuple
result maps onto several outputs). Every kernel here is a module-level
function, so Ray/cloudpickle ships it by reference, and a pure function of its
arguments (no state, no in-place writes to inputs).

Tensor-store contract (one store per socket, float32 unless said):

========================  ==================  ======================================
name                      shape               who writes it
========================  ==================  ======================================
``tokens``                (B, T) int64        driver, before every step
``positions``             (T,) int64          driver: ``arange(L, L+T)``, L = tokens cached
weights (below)           see shard_weights   driver, once (:func:`shard_weights`)
``x``                     (B*T, H)            embedding, then the residual stream
``attn_out``/``ffn_out``  (B*T, H)            row-parallel partial sums; all-reduced in place
``L{i}.k_cache``/``v``    (B, S, Hkv_loc, D)  layer i's kv_write kernel: prefill creates it,
                                              decode returns it with one more token
``logits_local``          (B, V/tp)           LM head; then all-gathered to (tp*B, V/tp)
``logits``                (B, V)              the step's result (padding dropped)
========================  ==================  ======================================

Unfused programs also leave intermediates (``h``, ``qkv``, ``attn``,
``gate_up``, ``act``, ``h_last``) in the store; fused sections keep them local.
Collectives: an all-reduce sums ``store[op.buffer]`` over the group in place
(shape and dtype unchanged, float32 here although the op says bfloat16 for
timing); an all-gather replaces the (B, V/tp) buffer (``op.shape``, the
shard) with the rank-ordered row concatenation (tp*B, V/tp), i.e.
``np.concatenate(buffers, axis=0)``.
The KV caches grow by concatenation, so the store needs no ``max_context``;
the timing-mode memory plan is what reserves the full cache.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sn40l_emu.workload.reference import Weights, apply_rope, gqa_attention, rms_norm, silu_mul
from sn40l_emu.workload.sharding import ShardPlan

Attrs = tuple[tuple[str, object], ...]
SectionStep = tuple[Callable[..., object], tuple[str, ...], tuple[str, ...], Attrs]


# ---- kernels ---------------------------------------------------------------
def embed_lookup(tokens: np.ndarray, embed: np.ndarray, *, vocab_start: int) -> np.ndarray:
    """Vocab-parallel lookup: rows this socket owns, zeros elsewhere (summed by an all-reduce)."""
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1) - vocab_start
    owned = (ids >= 0) & (ids < embed.shape[0])
    out = np.zeros((ids.size, embed.shape[1]), dtype=np.float32)
    out[owned] = embed[ids[owned]]
    return out


def rms_norm_rows(x: np.ndarray, weight: np.ndarray, *, eps: float) -> np.ndarray:
    return rms_norm(x, weight, eps)


def rms_norm_last(x: np.ndarray, weight: np.ndarray, *, eps: float, batch: int) -> np.ndarray:
    """RMSNorm of each sequence's last row: (B*T, H) -> (B, H), for the LM head."""
    last = x.reshape(batch, -1, x.shape[-1])[:, -1, :]
    return rms_norm(last, weight, eps)


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x @ w).astype(np.float32)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b).astype(np.float32)


def rope_qkv(
    qkv: np.ndarray, positions: np.ndarray, *, q_heads: int, kv_heads: int, head_dim: int,
    batch: int, theta: float,
) -> np.ndarray:
    """Rotate the Q and K columns of a (B*T, (Hq+2Hkv)*D) block; V passes through."""
    q, k, v = _split_qkv(qkv, q_heads, kv_heads, head_dim, batch)
    q = apply_rope(q, positions, theta)
    k = apply_rope(k, positions, theta)
    rows = qkv.shape[0]
    return np.concatenate([q.reshape(rows, -1), k.reshape(rows, -1), v.reshape(rows, -1)], axis=1)


def kv_init(
    qkv: np.ndarray, *, q_heads: int, kv_heads: int, head_dim: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prefill: the new K and V become the cache, (B, T, Hkv, D) each."""
    _, k, v = _split_qkv(qkv, q_heads, kv_heads, head_dim, batch)
    return k, v


def kv_append(
    qkv: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, *, q_heads: int,
    kv_heads: int, head_dim: int, batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode: the cache with the new tokens' K and V appended along the sequence axis."""
    _, k, v = _split_qkv(qkv, q_heads, kv_heads, head_dim, batch)
    return np.concatenate([k_cache, k], axis=1), np.concatenate([v_cache, v], axis=1)


def attention(
    qkv: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, positions: np.ndarray, *,
    q_heads: int, kv_heads: int, head_dim: int, batch: int,
) -> np.ndarray:
    """Causal GQA of this socket's query heads over the (already updated) cache."""
    q, _, _ = _split_qkv(qkv, q_heads, kv_heads, head_dim, batch)
    out = gqa_attention(q, k_cache, v_cache, positions)
    return out.reshape(qkv.shape[0], q_heads * head_dim)


def silu_mul_halves(gate_up: np.ndarray) -> np.ndarray:
    """SwiGLU of a (rows, 2F) block laid out [gate | up]."""
    half = gate_up.shape[1] // 2
    return silu_mul(gate_up[:, :half], gate_up[:, half:])


def unshard_logits(gathered: np.ndarray, *, tp: int, batch: int, vocab_size: int) -> np.ndarray:
    """(tp*B, V/tp) rank-ordered rows -> (B, V), vocab padding dropped."""
    parts = gathered.reshape(tp, batch, -1)
    return np.ascontiguousarray(parts.transpose(1, 0, 2).reshape(batch, -1)[:, :vocab_size])


def fused_section(
    *arrays: np.ndarray, names: tuple[str, ...], steps: tuple[SectionStep, ...],
    outputs: tuple[str, ...],
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Run several kernels as one: intermediates stay in a local dict (on chip)."""
    local: dict[str, object] = dict(zip(names, arrays, strict=True))
    for fn, ins, outs, attrs in steps:
        result = fn(*[local[n] for n in ins], **dict(attrs))
        if len(outs) == 1:
            local[outs[0]] = result
        else:
            assert isinstance(result, tuple)
            local.update(zip(outs, result, strict=True))
    values = tuple(local[n] for n in outputs)
    return values[0] if len(values) == 1 else values  # type: ignore[return-value]


def _split_qkv(
    qkv: np.ndarray, q_heads: int, kv_heads: int, head_dim: int, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = qkv.shape[0]
    t = rows // batch
    qw, kw = q_heads * head_dim, kv_heads * head_dim
    q = qkv[:, :qw].reshape(batch, t, q_heads, head_dim)
    k = qkv[:, qw : qw + kw].reshape(batch, t, kv_heads, head_dim)
    v = qkv[:, qw + kw :].reshape(batch, t, kv_heads, head_dim)
    return q, k, v


# ---- weights for one socket -------------------------------------------------
def shard_weights(weights: Weights, plan: ShardPlan, rank_index: int) -> Weights:
    """The slices of reference weights (:func:`make_weights`) that rank ``rank_index`` holds.

    Store names: ``embed`` (V/tp, H) and ``lm_head`` (H, V/tp) vocab slices
    (zero-padded), ``final_norm``, and per layer ``L{i}.attn_norm``,
    ``L{i}.wqkv`` (H, [q | k | v] local columns), ``L{i}.wo`` (local rows),
    ``L{i}.ffn_norm``, ``L{i}.w_gate_up`` (H, [gate | up] local columns),
    ``L{i}.w_down`` (local rows).
    """
    model = plan.model
    d = model.head_dim
    q0 = plan.q_head_start(rank_index) * d
    q1 = q0 + plan.q_width_per_socket
    k0 = plan.kv_head_start(rank_index) * d
    k1 = k0 + plan.kv_width_per_socket
    f0 = plan.ffn_start(rank_index)
    f1 = f0 + plan.ffn_per_socket
    v0 = plan.vocab_start(rank_index)
    v1 = v0 + plan.vocab_per_socket
    pad = plan.vocab_padded - model.vocab_size
    embed = np.pad(weights["embed"], ((0, pad), (0, 0)))
    head = np.pad(weights["lm_head"], ((0, 0), (0, pad)))
    out: Weights = {
        "embed": np.ascontiguousarray(embed[v0:v1]),
        "lm_head": np.ascontiguousarray(head[:, v0:v1]),
        "final_norm": weights["final_norm"].copy(),
    }
    for i in range(model.num_hidden_layers):
        p = f"L{i}."
        out[p + "attn_norm"] = weights[p + "attn_norm"].copy()
        out[p + "wqkv"] = np.concatenate(
            [weights[p + "wq"][:, q0:q1], weights[p + "wk"][:, k0:k1], weights[p + "wv"][:, k0:k1]],
            axis=1,
        )
        out[p + "wo"] = np.ascontiguousarray(weights[p + "wo"][q0:q1])
        out[p + "ffn_norm"] = weights[p + "ffn_norm"].copy()
        out[p + "w_gate_up"] = np.concatenate(
            [weights[p + "w_gate"][:, f0:f1], weights[p + "w_up"][:, f0:f1]], axis=1
        )
        out[p + "w_down"] = np.ascontiguousarray(weights[p + "w_down"][f0:f1])
    return out
