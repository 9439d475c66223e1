"""The host runtime around the device: what a request and each output token cost on the host.

Closed forms over the profile's ``runtime`` knobs (every platform):

* per request: ``tokenize = prompt_len * batch * tokenize_ns_per_token`` and
  ``schedule = schedule_ns``;
* per program switch on a socket (router -> expert, prefill -> decode, expert
  -> expert): ``program_load_ns + argument_load_ns``; when only the weight
  addresses change (the same program over other weights), ``argument_load_ns``;
* per output token: the step's output over the host link (logits,
  ``batch * vocab * 2 B``, when the host samples; token ids, ``batch * 4 B``,
  otherwise), host sampling (``sample_ns`` when the host samples), the next
  token ids back (``batch * 4 B``), and ``batch * token_overhead_ns``; each host-link
  transfer costs ``link_latency + bytes / rate`` at the per-socket host rate.
  ``token_overhead_ns`` is host work per output token *per sequence*
  (detokenizing, stop-condition checks, streaming the text out): a serving loop
  does it for each of the ``batch`` sequences of a step, so it grows with the
  batch, unlike the step's own overhead;
* per step (prefill or decode): ``step_overhead_ns`` (the GPU serving
  framework's per-step overhead).

The device waits for the host between steps (the next token is its input), so
host time adds to a request's latency as gaps between steps: every socket
shifts by the same amount and no link is busy across a step boundary, so the
gap adds exactly (the cost-reuse shift argument of ``engine/reuse.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.config import NodeProfile
from sn40l_emu.trace import TraceEvent
from sn40l_emu.units import transfer_ns

TOKEN_ID_BYTES = 4  # int32 token ids
LOGIT_BYTES = 2  # bf16 logits


def host_link_rate(profile: NodeProfile) -> int:
    """Host-link rate one socket gets (as ``socket_model.host_rate_per_socket``)."""
    return profile.host.link_bw_bytes_per_s * profile.host.links // profile.sockets


def link_ns(profile: NodeProfile, size_bytes: int) -> int:
    """One transfer over the host link: latency plus serialisation."""
    return profile.host.link_latency_ns + transfer_ns(size_bytes, host_link_rate(profile))


@dataclass(frozen=True)
class HostTime:
    """Named host terms (ns) in the order they happen; ``total_ns`` is their sum."""

    terms: tuple[tuple[str, int], ...] = ()

    @property
    def total_ns(self) -> int:
        return sum(v for _, v in self.terms)

    def __add__(self, other: HostTime) -> HostTime:
        return HostTime(self.terms + other.terms)

    def times(self, n: int) -> HostTime:
        """The same terms ``n`` times over (each term's value multiplied)."""
        return HostTime(tuple((k, v * n) for k, v in self.terms))

    def by_name(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k, v in self.terms:
            out[k] = out.get(k, 0) + v
        return out

    def events(self, start_ns: int, socket: int = -1) -> list[TraceEvent]:
        """The terms back to back from ``start_ns`` on the ``host`` track (socket -1 = the host)."""
        out = []
        t = start_ns
        for name, ns in self.terms:
            if ns:
                out.append(TraceEvent(t, ns, socket, "host", name, {}))
            t += ns
        return out


def request_ns(profile: NodeProfile, prompt_len: int, batch: int) -> HostTime:
    """Tokenizing the prompts and scheduling the request."""
    r = profile.runtime
    return HostTime((("tokenize", prompt_len * batch * r.tokenize_ns_per_token), ("schedule", r.schedule_ns)))


def switch_ns(profile: NodeProfile, *, program_changes: bool = True) -> HostTime:
    """A socket switching program (Program Load + Argument Load), or only its weights (Argument Load)."""
    r = profile.runtime
    if program_changes:
        return HostTime((("program_load", r.program_load_ns), ("argument_load", r.argument_load_ns)))
    return HostTime((("argument_load", r.argument_load_ns),))


def step_ns(profile: NodeProfile) -> HostTime:
    """The serving framework's overhead around one device step."""
    return HostTime((("step_overhead", profile.runtime.step_overhead_ns),))


def token_ns(profile: NodeProfile, vocab_size: int, batch: int) -> HostTime:
    """One output token per sequence: output over the link, sampling, next token back, and
    the per-sequence host overhead (``batch * token_overhead_ns``: detokenize, stop checks,
    streaming happen once per sequence of the step)."""
    r = profile.runtime
    out_bytes = batch * (vocab_size * LOGIT_BYTES if r.host_sampling else TOKEN_ID_BYTES)
    return HostTime((
        ("token_out", link_ns(profile, out_bytes)),
        ("sample", r.sample_ns if r.host_sampling else 0),
        ("token_back", link_ns(profile, batch * TOKEN_ID_BYTES)),
        ("token_overhead", batch * r.token_overhead_ns),
    ))


def generate_ns(profile: NodeProfile, vocab_size: int, batch: int, prompt_len: int, tokens: int) -> HostTime:
    """A whole request: request terms, the prefill program's load, the switch to the decode
    program, ``tokens`` output tokens and one framework step per device step (1 + tokens - 1)."""
    total = request_ns(profile, prompt_len, batch) + switch_ns(profile)
    if tokens > 1:
        total = total + switch_ns(profile)  # prefill -> decode program
    return total + step_ns(profile).times(tokens) + token_ns(profile, vocab_size, batch).times(tokens)


def prefill_ns(profile: NodeProfile, vocab_size: int, batch: int, prompt_len: int) -> HostTime:
    """A prefill on its own (time to first token): request, program load, one step, one token."""
    return generate_ns(profile, vocab_size, batch, prompt_len, 1)


def decode_step_ns(profile: NodeProfile, vocab_size: int, batch: int) -> HostTime:
    """One steady-state decode step: the framework step and one output token."""
    return step_ns(profile) + token_ns(profile, vocab_size, batch)
