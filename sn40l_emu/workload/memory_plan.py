"""Static memory plan of one model on each socket of its TP group.

Three segments per socket, sized ahead of time as a compiled SN40L model
states its needs (docs/model.md §4 "Runtime"):

* ``weights``: the socket's weight shard, read-only (so eviction copies nothing back);
* ``kv_cache``: K and V for ``batch x max_context_len`` tokens, all layers;
* ``activations``: scratch for the largest step, a prefill of ``batch x
  max_prefill_len`` tokens run unfused (the worst case: fused kernels keep
  intermediates on chip). Static lifetime analysis lets the residual stream
  and the widest pair of live intermediates share one region: the peak is the
  residual ``x`` plus the widest (input, output) pair of any operator, plus the
  logits (local slice, gathered and final).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sn40l_emu.errors import ConfigError, ShardingError
from sn40l_emu.program import AllocOp, Tier
from sn40l_emu.workload.model_config import ModelConfig
from sn40l_emu.workload.operators import ACT_BYTES
from sn40l_emu.workload.placement import HBM_ONLY, Placement
from sn40l_emu.workload.sharding import ShardPlan

if TYPE_CHECKING:
    from sn40l_emu.config import NodeProfile


def activation_scratch_bytes(plan: ShardPlan, batch: int, max_prefill_len: int) -> int:
    """Peak live activation bytes of one socket during an unfused prefill."""
    h, f = plan.model.hidden_size, plan.ffn_per_socket
    qkv, q = plan.qkv_width_per_socket, plan.q_width_per_socket
    widest_pair = max(h + qkv, qkv + q, q + h, h + 2 * f, 2 * f + f, f + h)
    rows = batch * max_prefill_len
    logits = batch * (plan.vocab_per_socket + plan.vocab_padded + plan.model.vocab_size)
    return (rows * (h + widest_pair) + logits) * ACT_BYTES


def memory_plan(
    model: ModelConfig,
    plan: ShardPlan,
    batch: int,
    max_context_len: int,
    *,
    max_prefill_len: int | None = None,
    placement: Placement = HBM_ONLY,
    prefix: str | None = None,
) -> dict[int, list[AllocOp]]:
    """Allocations of every socket of ``plan.group`` (global index -> AllocOps).

    Segment names are ``f"{prefix}weights"``, ``f"{prefix}kv_cache"`` and
    ``f"{prefix}activations"``; ``prefix`` defaults to ``f"{model.name}."``
    (give each CoE expert its own). The plan is symmetric, so every socket
    gets the same sizes.
    """
    if plan.model != model:
        raise ShardingError(f"plan was made for {plan.model.name}, not {model.name}")
    tag = f"{model.name}." if prefix is None else prefix
    prefill_len = max_context_len if max_prefill_len is None else max_prefill_len
    for field, value in (("batch", batch), ("max_context_len", max_context_len),
                         ("max_prefill_len", prefill_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(field, value, "a positive integer")
    allocs = [
        AllocOp(f"{tag}weights", placement.weights, plan.weight_bytes_per_socket, read_only=True),
        AllocOp(f"{tag}kv_cache", placement.kv,
                batch * max_context_len * plan.kv_bytes_per_token_per_socket),
        AllocOp(f"{tag}activations", placement.activations,
                activation_scratch_bytes(plan, batch, prefill_len)),
    ]
    return {socket: list(allocs) for socket in plan.group}


@dataclass(frozen=True)
class Fit:
    """How many decoder layers' weights stay in HBM; the rest stream from ``spill_tier``."""

    hbm_layers: int
    layers: int
    spill_tier: Tier

    @property
    def spilled_layers(self) -> int:
        return self.layers - self.hbm_layers


def fit_in_hbm(profile: NodeProfile, plan: ShardPlan, batch: int, max_context_len: int,
               prefill_len: int) -> Fit:
    """Keep as many decoder layers' weights in HBM as the static memory plan leaves room for.

    The KV cache, the activation scratch and the embedding / LM head stay in
    HBM; what is left holds whole layers (docs/model.md §1: weights have the highest
    bandwidth need, so they are the last to spill).
    """
    from sn40l_emu.config import Platform
    model = plan.model
    allocs = {a.segment.rsplit(".", 1)[-1]: a.size_bytes for a in memory_plan(
        model, plan, batch, max_context_len, max_prefill_len=prefill_len)[plan.group[0]]}
    layers_bytes = model.num_hidden_layers * plan.layer_weight_bytes_per_socket
    fixed = allocs["kv_cache"] + allocs["activations"] + allocs["weights"] - layers_bytes
    room = profile.socket.hbm_bytes - fixed
    spill = Tier.DDR if profile.platform is Platform.SN40L else Tier.HOST
    if room < 0:
        raise ConfigError(
            "model", model.name,
            f"a model whose KV cache, activations and embeddings fit in one socket's HBM at tp={plan.tp} "
            f"(they need {fixed} B of {profile.socket.hbm_bytes} B)")
    hbm_layers = min(model.num_hidden_layers, room // plan.layer_weight_bytes_per_socket)
    return Fit(hbm_layers, model.num_hidden_layers, spill)
