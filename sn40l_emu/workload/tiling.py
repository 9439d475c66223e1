"""Stage buffer sizes: the SRAM (PMU) bytes each operator holds as a pipeline stage.

In a fused kernel the tensors stream through the tile in tiles (docs/model.md §1
"The tile as a pipeline"); a stage buffers only the tiles in flight, never a
whole weight matrix. The tile model shares PMUs among stages by these bytes
and spills through HBM when their sum exceeds the 520 MiB of SRAM, so they
must be of the right order, not exact. The SN40L compiler's real tiling is not
public; these are the choices, each a named constant:

* ``ROW_TILE_TOKENS``: token rows streamed per tile. 128 rows keeps a matmul's
  activation tile around a MiB at hidden 4096 and lets PCUs (whose systolic
  arrays want tens of rows) stay busy; a decode step has ``batch`` rows only.
* ``COL_TILE``: weight columns per tile. A (K x 256) BF16 weight tile is 2 MiB
  at K=4096, 8 MiB at K=16384.
* ``KV_BLOCK_TOKENS``: keys per block of flash-style attention.
* Everything that streams in is double-buffered (load the next tile while
  computing this one), which is how weight loads overlap compute (docs/model.md §1).

Row reductions (RMSNorm) hold whole rows; pointwise operators hold
(rows x ``COL_TILE``) tiles. With these, a Llama3.1-8B decoder layer at TP8
holds ~12 MiB of stage buffers in decode (B=8) and ~27 MiB in prefill (B=8,
P=2048); Llama3.1-405B at TP1 ~110 MiB and ~230 MiB: all fit in 520 MiB, as a
fused decoder does on the real machine.
"""

from __future__ import annotations

ROW_TILE_TOKENS = 128
COL_TILE = 256
KV_BLOCK_TOKENS = 512
DOUBLE_BUFFER = 2
ACT_BYTES = 2  # BF16 activations
WEIGHT_BYTES = 2  # BF16 weights
ACC_BYTES = 4  # FP32 accumulators (attention scores and running output)


def rows_in_flight(rows: int) -> int:
    """Token rows one stage works on at a time."""
    return min(rows, ROW_TILE_TOKENS)


def matmul_buffer_bytes(rows: int, k: int, n: int) -> int:
    """(rows x k) @ (k x n): a double-buffered weight tile, input row tile and output tile."""
    r, c = rows_in_flight(rows), min(n, COL_TILE)
    weight_tile = k * c * WEIGHT_BYTES
    input_tile = r * k * ACT_BYTES
    output_tile = r * c * ACT_BYTES
    return DOUBLE_BUFFER * (weight_tile + input_tile + output_tile)


def rowwise_buffer_bytes(rows: int, width: int) -> int:
    """A row reduction (RMSNorm) needs whole rows: double-buffered input and output rows."""
    return DOUBLE_BUFFER * rows_in_flight(rows) * 2 * width * ACT_BYTES


def pointwise_buffer_bytes(rows: int, width: int, n_inputs: int, n_outputs: int) -> int:
    """An elementwise operator (add, SiLU*mul, RoPE, copies) streams (rows x COL_TILE) tiles."""
    tile = rows_in_flight(rows) * min(width, COL_TILE) * ACT_BYTES
    return DOUBLE_BUFFER * (n_inputs + n_outputs) * tile


def attention_buffer_bytes(
    rows: int, keys: int, q_heads: int, kv_heads: int, head_dim: int
) -> int:
    """Flash-style attention: a Q tile, double-buffered K/V blocks, FP32 scores and output."""
    r, kb = rows_in_flight(rows), min(keys, KV_BLOCK_TOKENS)
    q_tile = r * q_heads * head_dim * ACT_BYTES
    kv_blocks = DOUBLE_BUFFER * 2 * kb * kv_heads * head_dim * ACT_BYTES
    scores = r * q_heads * kb * ACC_BYTES
    out_acc = r * q_heads * head_dim * ACC_BYTES
    return q_tile + kv_blocks + scores + out_acc
