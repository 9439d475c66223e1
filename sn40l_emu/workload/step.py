"""What one program computes: a prefill of a prompt, or one decode step.

A step is the unit the CoE runtime schedules (docs/model.md §4: prefill, then N
decode steps per request). Every sequence of a batch has the same length, so
one ``context_len`` describes the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sn40l_emu.errors import ConfigError


class Phase(str, Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True)
class Step:
    """``batch`` sequences each add ``new_tokens`` to a KV cache holding ``context_len`` tokens.

    Prefill: ``context_len == 0`` and ``new_tokens`` = prompt length.
    Decode: ``new_tokens == 1`` and ``context_len`` = tokens already cached
    (prompt + tokens generated so far); attention spans ``context_len + 1`` keys.
    """

    phase: Phase
    batch: int
    new_tokens: int
    context_len: int

    @staticmethod
    def prefill(batch: int, prompt_len: int) -> Step:
        _check_positive("batch", batch)
        _check_positive("prompt_len", prompt_len)
        return Step(Phase.PREFILL, batch, prompt_len, 0)

    @staticmethod
    def decode(batch: int, context_len: int) -> Step:
        _check_positive("batch", batch)
        _check_positive("context_len", context_len)
        return Step(Phase.DECODE, batch, 1, context_len)

    @property
    def tokens(self) -> int:
        """Rows of every activation matrix: batch x new tokens."""
        return self.batch * self.new_tokens

    @property
    def total_len(self) -> int:
        """Tokens in the KV cache after this step."""
        return self.context_len + self.new_tokens

    @property
    def attended_pairs_per_sequence(self) -> int:
        """(query, key) pairs under the causal mask for one sequence and one head.

        New token i (0-based) sits at position ``context_len + i`` and sees
        ``context_len + i + 1`` keys; summed over the new tokens.
        """
        t = self.new_tokens
        return t * self.context_len + t * (t + 1) // 2

    @property
    def label(self) -> str:
        if self.phase is Phase.PREFILL:
            return f"prefill.B{self.batch}.P{self.new_tokens}"
        return f"decode.B{self.batch}.L{self.context_len}"


def _check_positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(field, value, "a positive integer")
