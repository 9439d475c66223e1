"""Tensor-parallel (TP) sharding plan: which slice of every weight a socket holds.

Megatron-style TP over a group of sockets (docs/model.md §2: experts run TP8 on one
node, TP16 over two nodes)::

    x ─ RMSNorm ─ [Q K V  column-parallel] ─ RoPE ─ attention ─ [O row-parallel] ─ all-reduce ─ +x
      ─ RMSNorm ─ [gate up column-parallel] ─ SiLU*mul ─ [down row-parallel] ─ all-reduce ─ +x

* Query heads are split evenly. KV heads are split when ``num_kv_heads >= tp``;
  when fewer, each socket holds the ONE KV head its query heads use, so a KV
  head is replicated on ``tp / num_kv_heads`` sockets (its weights and its KV
  cache are duplicated: that costs memory, never a collective).
* Two all-reduces per decoder layer: after ``o_proj`` and after ``down_proj``.
* Embedding: **vocab-parallel** (Megatron's ``VocabParallelEmbedding``): each
  socket holds ``vocab/tp`` rows, looks up the tokens it owns (zeros for the
  rest), then an all-reduce of the (tokens, hidden) embeddings. Chosen over a
  hidden split because the LM head is split the same way, so both matrices
  are sharded identically (and tied embeddings stay one array per socket).
* LM head: split over the vocabulary, the logits all-gathered.
* The vocabulary is padded up to a multiple of ``tp`` with zero rows/columns
  (as Megatron pads); padded logits are dropped after the gather, so they are
  never chosen. Nothing else is padded: a head or FFN count that does not
  divide raises :class:`ShardingError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.errors import ShardingError
from sn40l_emu.units import ceil_div
from sn40l_emu.workload.model_config import BF16_BYTES, ModelConfig

ALLOWED_TP = (1, 2, 4, 8, 16)  # 16 = two nodes of eight sockets (docs/model.md §2)


@dataclass(frozen=True)
class ShardPlan:
    """How ``model`` is split over ``group`` (global socket indices, rank order)."""

    model: ModelConfig
    tp: int
    group: tuple[int, ...]
    q_heads_per_socket: int
    kv_heads_per_socket: int
    kv_replication: int  # sockets sharing one KV head (1 = KV heads are split, not replicated)
    ffn_per_socket: int
    vocab_padded: int
    vocab_per_socket: int

    # ---- which slice a rank holds (rank_index = position in ``group``) ---
    def rank_of(self, socket: int) -> int:
        """Rank index of a global socket index in this plan's group."""
        if socket not in self.group:
            raise ShardingError(f"socket {socket} is not in the TP group {self.group}")
        return self.group.index(socket)

    def q_head_start(self, rank_index: int) -> int:
        return rank_index * self.q_heads_per_socket

    def kv_head_start(self, rank_index: int) -> int:
        """First KV head of a rank: its own slice, or the shared head it replicates."""
        return (rank_index // self.kv_replication) * self.kv_heads_per_socket

    def ffn_start(self, rank_index: int) -> int:
        return rank_index * self.ffn_per_socket

    def vocab_start(self, rank_index: int) -> int:
        return rank_index * self.vocab_per_socket

    @property
    def kv_heads_replicated(self) -> bool:
        return self.kv_replication > 1

    # ---- per-socket widths -------------------------------------------------
    @property
    def q_width_per_socket(self) -> int:
        return self.q_heads_per_socket * self.model.head_dim

    @property
    def kv_width_per_socket(self) -> int:
        return self.kv_heads_per_socket * self.model.head_dim

    @property
    def qkv_width_per_socket(self) -> int:
        return self.q_width_per_socket + 2 * self.kv_width_per_socket

    # ---- per-socket bytes (BF16) -------------------------------------------
    @property
    def layer_weight_bytes_per_socket(self) -> int:
        """One decoder layer's weights on one socket, both RMSNorm weights replicated."""
        h = self.model.hidden_size
        params = (
            h * self.qkv_width_per_socket
            + self.q_width_per_socket * h
            + 3 * h * self.ffn_per_socket
            + 2 * h
        )
        return params * BF16_BYTES

    @property
    def embed_bytes_per_socket(self) -> int:
        return self.vocab_per_socket * self.model.hidden_size * BF16_BYTES

    @property
    def lm_head_bytes_per_socket(self) -> int:
        """Bytes a socket reads for its LM-head slice (the embedding slice when tied)."""
        return self.vocab_per_socket * self.model.hidden_size * BF16_BYTES

    @property
    def weight_bytes_per_socket(self) -> int:
        """Resident weight bytes of one socket: layers, embedding, final norm, LM head."""
        head = 0 if self.model.tie_word_embeddings else self.lm_head_bytes_per_socket
        return (
            self.model.num_hidden_layers * self.layer_weight_bytes_per_socket
            + self.embed_bytes_per_socket
            + self.model.hidden_size * BF16_BYTES
            + head
        )

    @property
    def kv_bytes_per_token_per_layer_per_socket(self) -> int:
        return 2 * self.kv_width_per_socket * BF16_BYTES

    @property
    def kv_bytes_per_token_per_socket(self) -> int:
        """K and V of one token over all layers on one socket (replicated heads included)."""
        return self.model.num_hidden_layers * self.kv_bytes_per_token_per_layer_per_socket


def make_plan(model: ModelConfig, tp: int, group: tuple[int, ...] | None = None) -> ShardPlan:
    """Split ``model`` over ``tp`` sockets (``group`` defaults to sockets 0..tp-1).

    Raises :class:`ShardingError` naming the dimension that does not divide.
    """
    if tp not in ALLOWED_TP:
        raise ShardingError(f"{model.name}: tp={tp} is not supported; allowed: {ALLOWED_TP}")
    sockets = tuple(range(tp)) if group is None else tuple(group)
    if len(sockets) != tp or len(set(sockets)) != tp or any(s < 0 for s in sockets):
        raise ShardingError(
            f"{model.name}: group {sockets} must list {tp} distinct non-negative socket indices"
        )
    heads, kv_heads = model.num_attention_heads, model.num_key_value_heads
    if heads % tp:
        raise ShardingError(
            f"{model.name}: num_attention_heads={heads} does not split over tp={tp}"
        )
    if kv_heads >= tp:
        if kv_heads % tp:
            raise ShardingError(
                f"{model.name}: num_key_value_heads={kv_heads} does not split over tp={tp}"
            )
        kv_per_socket, replication = kv_heads // tp, 1
    else:
        if tp % kv_heads:
            raise ShardingError(
                f"{model.name}: tp={tp} is not a multiple of num_key_value_heads={kv_heads}, "
                "so KV heads cannot be replicated evenly"
            )
        kv_per_socket, replication = 1, tp // kv_heads
    if model.intermediate_size % tp:
        raise ShardingError(
            f"{model.name}: intermediate_size={model.intermediate_size} does not split over tp={tp}"
        )
    vocab_per_socket = ceil_div(model.vocab_size, tp)
    return ShardPlan(
        model=model,
        tp=tp,
        group=sockets,
        q_heads_per_socket=heads // tp,
        kv_heads_per_socket=kv_per_socket,
        kv_replication=replication,
        ffn_per_socket=model.intermediate_size // tp,
        vocab_padded=vocab_per_socket * tp,
        vocab_per_socket=vocab_per_socket,
    )
