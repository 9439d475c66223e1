"""What every TP-scaling row shares with its plots: breakdown terms and latency per token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROW_BREAKDOWN_KEYS = ("compute", "weights", "kv", "collectives", "launch", "host", "other")


def per_token_ns(row: Mapping[str, Any]) -> float:
    """Latency per token of one sequence: per prompt token (prefill), per step, per output token
    (generate), per expected output token (speculative)."""
    if row["phase"] == "speculative":
        rate = float(row["tokens_per_s_per_user"])
        return 1e9 / rate if rate else 0.0
    per = {"prefill": row["prompt_len"], "decode": 1}.get(row["phase"])
    if per is None:
        per = row["context_len"] - row["prompt_len"] + 1  # N output tokens
    return float(row["latency_ns"]) / per
