"""Speculative decoding: a draft model proposes ``k`` tokens, the target verifies them in one step.

With a per-token acceptance rate ``a`` (each drafted token accepted
independently with probability ``a``; Leviathan et al., "Fast Inference from
Transformers via Speculative Decoding", ICML 2023, eq. 1), one iteration --
``k`` draft decode steps then one target step over ``k + 1`` new tokens --
yields in expectation

    E[tokens] = (1 - a**(k+1)) / (1 - a)        (= k + 1 when a = 1)

output tokens per sequence, so tokens/s/user = E[tokens] / iteration time. The
host is crossed once per iteration (the accepted tokens out, the next token
back); the draft's own tokens feed its next step on the device. The SN40L paper
(Prabhakar et al., MICRO 2024, Table IV) reports Llama 3.1 70B and 405B with
speculative decoding; the draft model, draft length and acceptance rate are the
profile's ``runtime.spec_*`` knobs, none of them public (docs/model.md §2,
"Speculative decoding", has the acceptance the published figures would need).
"""

from __future__ import annotations

from sn40l_emu.errors import ConfigError
from sn40l_emu.workload.step import Phase, Step


def expected_tokens(acceptance: float, draft_len: int) -> float:
    """E[output tokens per iteration] for acceptance ``acceptance`` and ``draft_len`` drafted tokens."""
    if not 0.0 <= acceptance <= 1.0:
        raise ConfigError("runtime.spec_acceptance", acceptance, "a fraction in [0, 1]")
    if draft_len < 1:
        raise ConfigError("runtime.spec_draft_len", draft_len, "an integer >= 1")
    if acceptance == 1.0:
        return float(draft_len + 1)
    return (1.0 - acceptance ** (draft_len + 1)) / (1.0 - acceptance)


def draft_steps(batch: int, context_len: int, draft_len: int) -> list[Step]:
    """The draft model's ``draft_len`` decode steps from ``context_len`` cached tokens."""
    return [Step.decode(batch, context_len + i) for i in range(draft_len)]


def verify_step(batch: int, context_len: int, draft_len: int) -> Step:
    """The target model's step over the ``draft_len + 1`` new tokens (the last accepted one and the drafts)."""
    return Step(Phase.DECODE, batch, draft_len + 1, context_len)
