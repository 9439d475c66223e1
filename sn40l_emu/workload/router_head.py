"""The router's expert-choice head: the kernel that turns a prefill into one expert per prompt.

The CoE router (docs/model.md §4) is a model of the experts' shape whose
prefill over the prompt ends, instead of in next-token logits, in a choice of
expert. Here that choice is a linear head over the experts, applied to the
mean of the prompt's final residual stream (mean-pooling the sequence, as
sentence classifiers over a decoder do), normalised by the model's final
RMSNorm:

    pooled = rms_norm(mean_t x[b, t, :], final_norm)      (B, H)
    expert_logits = pooled @ route_head                    (B, E)

The head runs replicated on every socket of the TP group (after the prefill's
last all-reduce every socket holds the whole residual stream ``x``), so it
needs no collective; it is one small kernel appended to the router's prefill
program. Its cost in timing mode: read ``x`` (B*T*H bf16) and the head
(H*E bf16) from HBM, write B*E bf16 logits; B*T*H adds for the pool,
4*B*H for the norm, 2*B*H*E for the matmul.
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.program import KernelOp, MemStream, Stage, StreamKind
from sn40l_emu.workload.exec_mode import MODE_TRAITS, ExecMode
from sn40l_emu.workload.model_config import BF16_BYTES, ModelConfig
from sn40l_emu.workload.placement import HBM_ONLY, Placement
from sn40l_emu.workload.reference import Weights, hidden_states, rms_norm

HEAD_WEIGHT = "route_head"  # (H, E) in every socket's tensor store
HEAD_OUTPUT = "expert_logits"  # (B, E): the router's result


def route_head(x: np.ndarray, final_norm: np.ndarray, head: np.ndarray, *, eps: float,
               batch: int) -> np.ndarray:
    """(B*T, H) residual stream -> (B, E) expert logits (see the module docstring)."""
    pooled = x.reshape(batch, -1, x.shape[-1]).mean(axis=1, dtype=np.float32)
    return (rms_norm(pooled, final_norm, eps) @ head).astype(np.float32)


def reference_expert_logits(model: ModelConfig, weights: Weights, head: np.ndarray,
                            tokens: np.ndarray) -> np.ndarray:
    """The router on one process (numpy reference, no sharding): (B, T) prompts -> (B, E) logits."""
    tokens = np.asarray(tokens, dtype=np.int64)
    x, _ = hidden_states(model, weights, tokens, np.arange(tokens.shape[1], dtype=np.int64), None)
    return route_head(x.reshape(-1, model.hidden_size), weights["final_norm"], head,
                      eps=model.rms_norm_eps, batch=tokens.shape[0])


def make_route_head(model: ModelConfig, n_experts: int, seed: int) -> np.ndarray:
    """Deterministic (H, E) float32 head weights, scaled 1/sqrt(H).

    Drawn from ``default_rng([seed, n_experts])``, a stream of its own: the same
    integer seed may also seed the router's other weights."""
    rng = np.random.default_rng([seed, n_experts])
    h = model.hidden_size
    return (rng.standard_normal((h, n_experts)) / np.sqrt(h)).astype(np.float32)


def route_head_op(model: ModelConfig, batch: int, prompt_len: int, n_experts: int, mode: ExecMode, *,
                  functional: bool = False, placement: Placement = HBM_ONLY) -> KernelOp:
    """The head as one kernel of the router program (timing costs; ``functional`` adds the numpy fn)."""
    h = model.hidden_size
    flops = batch * prompt_len * h + 4 * batch * h + 2 * batch * h * n_experts
    streams = (
        MemStream(placement.weights, h * n_experts * BF16_BYTES, StreamKind.WEIGHTS),
        MemStream(placement.activations, batch * prompt_len * h * BF16_BYTES, StreamKind.ACTIVATIONS),
        MemStream(placement.activations, batch * n_experts * BF16_BYTES, StreamKind.ACTIVATIONS,
                  write=True),
    )
    traits = MODE_TRAITS[mode]
    stage = Stage("router.expert_head", flops, batch * (h + n_experts) * BF16_BYTES)
    op = KernelOp("router.expert_head", (stage,), streams, traits.launch, fused=traits.fused)
    if not functional:
        return op
    return KernelOp(op.name, op.stages, op.streams, op.launch, op.fused, fn=route_head,
                    inputs=("x", "final_norm", HEAD_WEIGHT), outputs=(HEAD_OUTPUT,),
                    attrs=(("eps", model.rms_norm_eps), ("batch", batch)))
