"""Single-process numpy reference of a Llama-style model (functional-mode ground truth).

RMSNorm, RoPE (HF ``rotate_half`` convention, ``rope_theta``), grouped-query
attention with a KV cache, SwiGLU FFN and an untied LM head (tied when the
config says so), all in float32. Weights are random but deterministic from a
seed: functional mode checks that the sharded programs compute the same
numbers, not that the model is any good. ``rope_scaling`` (Llama 3.1) is not
applied: the reference only ever runs the tiny test models.

The math helpers here (``rms_norm``, ``apply_rope``, ``gqa_attention``,
``silu_mul``) are also the bodies of the sharded kernels in
:mod:`sn40l_emu.workload.functional`, so a test that compares the two checks
the sharding, the collectives and the KV-cache handling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sn40l_emu.workload.model_config import ModelConfig

Weights = dict[str, np.ndarray]


# ---- math helpers (pure, float32) -----------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / rms(x) * weight over the last axis."""
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps)) * weight).astype(np.float32)


def rope_cos_sin(
    positions: np.ndarray, head_dim: int, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables, shape (len(positions), head_dim), HF Llama layout."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    freqs = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def apply_rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate x of shape (B, T, heads, head_dim) at ``positions`` (T,)."""
    head_dim = x.shape[-1]
    cos, sin = rope_cos_sin(positions, head_dim, theta)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    half = head_dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(np.float32)


def gqa_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Causal grouped-query attention.

    q: (B, T, Hq, D) at ``positions`` (T,); k, v: (B, S, Hkv, D) for key
    positions 0..S-1. Query head h uses KV head ``h // (Hq // Hkv)``.
    Returns (B, T, Hq, D).
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    group = hq // hkv
    qg = q.reshape(b, t, hkv, group, d)
    scores = np.einsum("btkgd,bskd->bkgts", qg, k) / np.float32(np.sqrt(d))
    key_pos = np.arange(k.shape[1])
    mask = key_pos[None, :] > np.asarray(positions)[:, None]  # (T, S): future keys
    scores = np.where(mask[None, None, None], np.float32(-np.inf), scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    out = np.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, hq, d).astype(np.float32)


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """SwiGLU: silu(gate) * up."""
    return (gate / (1.0 + np.exp(-gate)) * up).astype(np.float32)


# ---- weights ---------------------------------------------------------------
def make_weights(model: ModelConfig, seed: int) -> Weights:
    """Deterministic float32 weights with HF-like layout, stored as (in, out) matrices.

    Names: ``embed`` (V, H), ``L{i}.attn_norm``, ``L{i}.wq`` (H, Hq*D),
    ``L{i}.wk``/``L{i}.wv`` (H, Hkv*D), ``L{i}.wo`` (Hq*D, H), ``L{i}.ffn_norm``,
    ``L{i}.w_gate``/``L{i}.w_up`` (H, F), ``L{i}.w_down`` (F, H),
    ``final_norm`` (H,), ``lm_head`` (H, V) (the embedding transposed when tied).
    Matrices are scaled by 1/sqrt(fan_in) so activations stay O(1).
    """
    rng = np.random.default_rng(seed)
    h, f = model.hidden_size, model.intermediate_size

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    w: Weights = {"embed": rng.standard_normal((model.vocab_size, h)).astype(np.float32)}
    for i in range(model.num_hidden_layers):
        w[f"L{i}.attn_norm"] = norm()
        w[f"L{i}.wq"] = mat(h, model.q_width)
        w[f"L{i}.wk"] = mat(h, model.kv_width)
        w[f"L{i}.wv"] = mat(h, model.kv_width)
        w[f"L{i}.wo"] = mat(model.q_width, h)
        w[f"L{i}.ffn_norm"] = norm()
        w[f"L{i}.w_gate"] = mat(h, f)
        w[f"L{i}.w_up"] = mat(h, f)
        w[f"L{i}.w_down"] = mat(f, h)
    w["final_norm"] = norm()
    tied = model.tie_word_embeddings
    w["lm_head"] = np.ascontiguousarray(w["embed"].T) if tied else mat(h, model.vocab_size)
    return w


# ---- the model -------------------------------------------------------------
@dataclass(frozen=True)
class LayerCache:
    """K and V of one layer, (B, S, Hkv, D) each."""

    k: np.ndarray
    v: np.ndarray


def forward(
    model: ModelConfig,
    weights: Weights,
    tokens: np.ndarray,
    positions: np.ndarray,
    cache: tuple[LayerCache, ...] | None,
) -> tuple[np.ndarray, tuple[LayerCache, ...]]:
    """Run ``tokens`` (B, T) at ``positions`` (T,) after ``cache``; last-position logits (B, V)."""
    x, new_cache = hidden_states(model, weights, tokens, positions, cache)
    last = rms_norm(x[:, -1, :], weights["final_norm"], model.rms_norm_eps)
    return (last @ weights["lm_head"]).astype(np.float32), new_cache


def hidden_states(
    model: ModelConfig,
    weights: Weights,
    tokens: np.ndarray,
    positions: np.ndarray,
    cache: tuple[LayerCache, ...] | None,
) -> tuple[np.ndarray, tuple[LayerCache, ...]]:
    """The decoder stack alone: the final residual stream (B, T, H) before the final norm
    (what the CoE router's expert head reads) and the updated cache."""
    b, t = tokens.shape
    hq, hkv, d = model.num_attention_heads, model.num_key_value_heads, model.head_dim
    x = weights["embed"][tokens]
    new_cache: list[LayerCache] = []
    for i in range(model.num_hidden_layers):
        h = rms_norm(x, weights[f"L{i}.attn_norm"], model.rms_norm_eps)
        q = apply_rope((h @ weights[f"L{i}.wq"]).reshape(b, t, hq, d), positions, model.rope_theta)
        k = apply_rope((h @ weights[f"L{i}.wk"]).reshape(b, t, hkv, d), positions, model.rope_theta)
        v = (h @ weights[f"L{i}.wv"]).reshape(b, t, hkv, d)
        if cache is not None:
            k = np.concatenate([cache[i].k, k], axis=1)
            v = np.concatenate([cache[i].v, v], axis=1)
        new_cache.append(LayerCache(k, v))
        attn = gqa_attention(q, k, v, positions).reshape(b, t, hq * d)
        x = x + attn @ weights[f"L{i}.wo"]
        h = rms_norm(x, weights[f"L{i}.ffn_norm"], model.rms_norm_eps)
        act = silu_mul(h @ weights[f"L{i}.w_gate"], h @ weights[f"L{i}.w_up"])
        x = x + act @ weights[f"L{i}.w_down"]
    return x, tuple(new_cache)


class ReferenceModel:
    """Stateful wrapper around :func:`forward`: holds the KV cache between calls."""

    def __init__(self, model: ModelConfig, weights: Weights) -> None:
        self.model = model
        self.weights = weights
        self._cache: tuple[LayerCache, ...] | None = None
        self._len = 0

    @property
    def context_len(self) -> int:
        """Tokens in the KV cache."""
        return self._len

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """Start afresh with prompts ``tokens`` (B, P); logits of the last position (B, V)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.arange(tokens.shape[1], dtype=np.int64)
        logits, self._cache = forward(self.model, self.weights, tokens, positions, None)
        self._len = tokens.shape[1]
        return logits

    def decode(self, token: np.ndarray) -> np.ndarray:
        """One step with the next token of each sequence (B,); logits (B, V)."""
        if self._cache is None:
            raise RuntimeError("decode() before prefill()")
        tokens = np.asarray(token, dtype=np.int64).reshape(-1, 1)
        positions = np.array([self._len], dtype=np.int64)
        logits, self._cache = forward(self.model, self.weights, tokens, positions, self._cache)
        self._len += 1
        return logits

    def generate(self, tokens: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy generation: ``new_tokens`` tokens per sequence, (B, new_tokens)."""
        out = [np.argmax(self.prefill(tokens), axis=-1)]
        while len(out) < new_tokens:
            out.append(np.argmax(self.decode(out[-1]), axis=-1))
        return np.stack(out, axis=1)
