"""Which expert each prompt goes to, and when it arrives.

The router of docs/model.md §4 picks one expert per prompt. The emulator does not
model the router's judgement, only its outcome, taken from a workload:

- ``uniform``: every expert equally likely.
- ``zipf:S``: expert popularity follows Zipf's law. Ranks 1..N get
  p(k) = k^-S / H(N, S), H(N, S) = sum_{j=1..N} j^-S. Which expert holds which
  rank is a seeded random permutation (``rng.permutation(N)``, drawn before
  any request), so that "popular" is not always "low id" and the cache is not
  accidentally helped by id order.
- a path to a JSONL trace: one request per line,
  ``{"prompt": str | int, "expert": int, "prompt_len": int, "output_tokens": int}``,
  replayed in file order; its lengths override the generator's.

A trace is a file a user names, so it is read with bounds, as the YAML
loader reads profiles (``yaml_load``): at most ``MAX_TRACE_BYTES`` per file
and ``MAX_TRACE_LINE_CHARS`` per line, UTF-8 only, one flat JSON object per
line (no nesting: a 5,000-deep ``[[[`` never reaches ``json``'s recursion),
finite numbers only (``NaN``/``Infinity`` are refused), integers within
``MAX_TRACE_INT``. Every error is a ``ConfigError`` naming ``FILE:LINE.FIELD``
and a shortened value, never the file's contents.

All randomness comes from ``numpy.random.default_rng(seed)``: one seed, one
sequence, on every machine.

Prompts (:func:`prompt_token_ids`): in functional mode the router reads each
prompt's token ids and picks the expert itself (coe/router.py). The emulator
has no tokenizer, so a prompt's ids are drawn deterministically from its
identity: a trace's ``prompt`` (text via CRC-32, or an integer) fixes its ids
whatever the request's position, so the same prompt routes the same way; a
synthetic request draws from ``default_rng([seed, request id])``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from sn40l_emu.errors import ConfigError
from sn40l_emu.units import NS_PER_S
from sn40l_emu.yaml_load import json_depth, read_text_bounded

MAX_TRACE_BYTES = 64 << 20  # a million requests of about 60 bytes each fit many times over
MAX_TRACE_LINE_CHARS = 64 * 1024  # one request; room for a long prompt text
MAX_TRACE_INT = 2**31  # experts and token counts far beyond any real trace; refuses 1e30-style typos
_ALLOWED = "'uniform', 'zipf:S' with S a number > 0, or the path of a JSONL trace file"
_TRACE_FIELDS = ("prompt", "expert", "prompt_len", "output_tokens")


class WorkloadKind(str, Enum):
    UNIFORM = "uniform"
    ZIPF = "zipf"
    TRACE = "trace"


@dataclass(frozen=True)
class TraceRecord:
    """One line of a JSONL trace; ``line`` (1-based) is kept for later error messages."""

    prompt: str | int
    expert: int
    prompt_len: int
    output_tokens: int
    line: int


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed workload string (see the module docstring)."""

    kind: WorkloadKind
    zipf_s: float = 0.0  # the Zipf exponent S; only for ZIPF
    trace: tuple[TraceRecord, ...] = ()  # only for TRACE
    source: str = ""  # the trace path, for messages

    def __str__(self) -> str:
        if self.kind is WorkloadKind.ZIPF:
            return f"zipf:{self.zipf_s:g}"
        if self.kind is WorkloadKind.TRACE:
            return self.source
        return self.kind.value


@dataclass(frozen=True)
class Request:
    """One prompt: its expert, its lengths, when it arrives (virtual ns)."""

    id: int
    expert: int
    prompt_len: int
    output_tokens: int
    arrival_ns: int = 0
    prompt: str | int | None = None  # the trace's prompt field, when there is one


def prompt_token_ids(r: Request, vocab_size: int, seed: int = 0) -> np.ndarray:
    """The prompt of ``r`` as (1, prompt_len) int64 token ids in [0, vocab_size) (module docstring)."""
    if vocab_size < 1:
        raise ConfigError("vocab_size", vocab_size, "an integer >= 1")
    if isinstance(r.prompt, str):
        key = [1, zlib.crc32(r.prompt.encode("utf-8"))]
    elif isinstance(r.prompt, int):
        key = [2, r.prompt % 2**64]
    else:
        key = [0, seed % 2**64, r.id]
    rng = np.random.default_rng(key)
    return rng.integers(0, vocab_size, size=(1, r.prompt_len), dtype=np.int64)


# --- parsing -----------------------------------------------------------------
def parse_workload(text: str) -> WorkloadSpec:
    """``"uniform"``, ``"zipf:1.2"`` or a trace path -> WorkloadSpec (ConfigError otherwise)."""
    stripped = text.strip()
    if stripped == WorkloadKind.UNIFORM.value:
        return WorkloadSpec(WorkloadKind.UNIFORM)
    if stripped.startswith(WorkloadKind.ZIPF.value + ":"):
        raw = stripped.split(":", 1)[1]
        try:
            s = float(raw)
        except ValueError:
            raise ConfigError("workload", text, _ALLOWED) from None
        if not (math.isfinite(s) and s > 0):
            raise ConfigError("workload.zipf_s", s, "a finite number > 0")
        return WorkloadSpec(WorkloadKind.ZIPF, zipf_s=s)
    path = Path(stripped)
    try:
        is_file = path.is_file()
    except OSError:  # a name too long for the file system, say: not a trace either
        is_file = False
    if is_file:
        return WorkloadSpec(WorkloadKind.TRACE, trace=load_trace(path), source=str(path))
    raise ConfigError("workload", text, _ALLOWED)


def read_trace_text(path: str | Path, what: str = "workload") -> str:
    """A trace file's text: at most ``MAX_TRACE_BYTES``, UTF-8 (ConfigError naming ``what`` otherwise)."""
    return read_text_bounded(Path(path), what, MAX_TRACE_BYTES, "trace file", "trace file")


def load_trace(path: str | Path) -> tuple[TraceRecord, ...]:
    """Read a JSONL trace file within the bounds above (see :func:`parse_trace_lines`)."""
    return parse_trace_lines(read_trace_text(path).splitlines(), str(path))


def _int_field(source: str, lineno: int, obj: dict[str, object], name: str, minimum: int) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_TRACE_INT:
        raise ConfigError(f"{source}:{lineno}.{name}", value, f"an integer in [{minimum}, {MAX_TRACE_INT}]")
    return value


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a finite number")


def _parse_line(line: str, where: str) -> object:
    """One line -> its JSON value, within the line bounds (ConfigError naming ``where``)."""
    if len(line) > MAX_TRACE_LINE_CHARS:
        raise ConfigError(where, f"<{len(line)} characters>", f"a line of at most {MAX_TRACE_LINE_CHARS} characters")
    depth = json_depth(line)
    if depth > 1:
        raise ConfigError(where, line.strip(), f"a flat JSON object (nested {depth} levels)")
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(where, line.strip(), f"a JSON object (column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an int of 5,000 digits, NaN, Infinity
        raise ConfigError(where, line.strip(), f"a JSON object ({type(exc).__name__}: {exc})") from None


def parse_trace_lines(lines: Iterable[str], source: str = "<trace>") -> tuple[TraceRecord, ...]:
    """JSONL lines -> records; blank lines are skipped, anything else wrong is a ConfigError.

    The error's field is ``SOURCE:LINE.FIELD`` (line numbers from 1), so a
    user can go straight to the bad line; the value is quoted shortened.
    """
    records: list[TraceRecord] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = _parse_line(line, f"{source}:{lineno}")
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}:{lineno}", obj,
                              "a JSON object with " + ", ".join(_TRACE_FIELDS))
        for name in _TRACE_FIELDS:
            if name not in obj:
                raise ConfigError(f"{source}:{lineno}.{name}", "<missing>", "a required field")
        extra = sorted(set(obj) - set(_TRACE_FIELDS))
        if extra:
            raise ConfigError(f"{source}:{lineno}.{extra[0]}", obj[extra[0]],
                              "no other fields than " + ", ".join(_TRACE_FIELDS))
        prompt = obj["prompt"]
        if isinstance(prompt, bool) or not isinstance(prompt, (str, int)) or (
                isinstance(prompt, int) and abs(prompt) >= 2**63):
            raise ConfigError(f"{source}:{lineno}.prompt", prompt, "a string or an integer of at most 63 bits")
        records.append(TraceRecord(
            prompt=prompt,
            expert=_int_field(source, lineno, obj, "expert", 0),
            prompt_len=_int_field(source, lineno, obj, "prompt_len", 1),
            output_tokens=_int_field(source, lineno, obj, "output_tokens", 1),
            line=lineno,
        ))
    if not records:
        raise ConfigError(source, "<empty>", "at least one request line")
    return tuple(records)


# --- distributions -----------------------------------------------------------
def zipf_probabilities(n_experts: int, s: float) -> np.ndarray:
    """p(k) = k^-S / sum_j j^-S for ranks k = 1..N; index k-1 holds rank k."""
    _check_n_experts(n_experts)
    weights = np.arange(1, n_experts + 1, dtype=np.float64) ** (-float(s))
    return weights / weights.sum()


def zipf_rank_order(n_experts: int, seed: int) -> np.ndarray:
    """``order[k-1]`` is the expert holding rank k: the seeded permutation of the docstring."""
    _check_n_experts(n_experts)
    return np.random.default_rng(seed).permutation(n_experts)


def expert_probabilities(spec: WorkloadSpec, n_experts: int, seed: int) -> np.ndarray:
    """Probability of each expert id under ``spec`` (trace: observed frequencies)."""
    _check_n_experts(n_experts)
    if spec.kind is WorkloadKind.UNIFORM:
        return np.full(n_experts, 1.0 / n_experts)
    if spec.kind is WorkloadKind.ZIPF:
        p = np.empty(n_experts)
        p[zipf_rank_order(n_experts, seed)] = zipf_probabilities(n_experts, spec.zipf_s)
        return p
    _check_trace_experts(spec, n_experts)
    counts = np.bincount([r.expert for r in spec.trace], minlength=n_experts).astype(np.float64)
    return counts / counts.sum()


def _check_n_experts(n_experts: int) -> None:
    if n_experts < 1:
        raise ConfigError("n_experts", n_experts, "an integer >= 1")


def _check_trace_experts(spec: WorkloadSpec, n_experts: int) -> None:
    for r in spec.trace:
        if r.expert >= n_experts:
            raise ConfigError(f"{spec.source or '<trace>'}:{r.line}.expert", r.expert,
                              f"an expert id < n_experts = {n_experts}")


# --- generators ----------------------------------------------------------------
def expert_sequence(spec: WorkloadSpec, n_experts: int, n_requests: int, seed: int) -> list[int]:
    """The expert of each of ``n_requests`` prompts, in order.

    Zipf draws the rank permutation first and then the picks from the same
    generator, so a longer sequence with the same seed extends a shorter one.
    """
    _check_n_experts(n_experts)
    if n_requests < 0:
        raise ConfigError("n_requests", n_requests, "an integer >= 0")
    if spec.kind is WorkloadKind.TRACE:
        _check_trace_experts(spec, n_experts)
        _check_trace_length(spec, n_requests)
        return [r.expert for r in spec.trace[:n_requests]]
    rng = np.random.default_rng(seed)
    if spec.kind is WorkloadKind.UNIFORM:
        return [int(e) for e in rng.integers(0, n_experts, size=n_requests)]
    order = rng.permutation(n_experts)
    ranks = rng.choice(n_experts, size=n_requests, p=zipf_probabilities(n_experts, spec.zipf_s))
    return [int(order[k]) for k in ranks]


def _check_trace_length(spec: WorkloadSpec, n_requests: int) -> None:
    if n_requests > len(spec.trace):
        where = spec.source or "the trace"
        raise ConfigError("n_requests", n_requests,
                          f"<= {len(spec.trace)}, the number of requests in {where}")


def requests(spec: WorkloadSpec, n_experts: int, n_requests: int, prompt_len: int,
             output_tokens: int, seed: int,
             arrivals_ns: Sequence[int] | None = None) -> list[Request]:
    """``n_requests`` requests with ids 0.. in order; arrivals default to 0 (all waiting).

    A trace supplies its own expert, prompt and lengths per request;
    ``prompt_len`` and ``output_tokens`` apply to the synthetic workloads.
    """
    if prompt_len < 1:
        raise ConfigError("prompt_len", prompt_len, "an integer >= 1")
    if output_tokens < 1:
        raise ConfigError("output_tokens", output_tokens, "an integer >= 1")
    if arrivals_ns is not None and len(arrivals_ns) != n_requests:
        raise ConfigError("arrivals_ns", len(arrivals_ns),
                          f"one arrival per request ({n_requests})")
    experts = expert_sequence(spec, n_experts, n_requests, seed)
    out: list[Request] = []
    for i, expert in enumerate(experts):
        arrival = int(arrivals_ns[i]) if arrivals_ns is not None else 0
        if spec.kind is WorkloadKind.TRACE:
            r = spec.trace[i]
            out.append(Request(i, expert, r.prompt_len, r.output_tokens, arrival, r.prompt))
        else:
            out.append(Request(i, expert, prompt_len, output_tokens, arrival))
    return out


def batches(spec: WorkloadSpec, n_experts: int, batch: int, n_batches: int | None,
            prompt_len: int, output_tokens: int, seed: int) -> list[list[Request]]:
    """``n_batches`` batches of ``batch`` requests (batch mode: all arrive at 0).

    ``n_batches=None`` replays a whole trace (the last batch may be short);
    a synthetic workload needs a number.
    """
    if batch < 1:
        raise ConfigError("batch", batch, "an integer >= 1")
    if n_batches is None:
        if spec.kind is not WorkloadKind.TRACE:
            raise ConfigError("n_batches", None,
                              f"an integer >= 0 for a {spec.kind.value} workload")
        n_requests = len(spec.trace)
    elif n_batches < 0:
        raise ConfigError("n_batches", n_batches, "an integer >= 0")
    else:
        n_requests = batch * n_batches
    flat = requests(spec, n_experts, n_requests, prompt_len, output_tokens, seed)
    return [flat[i:i + batch] for i in range(0, len(flat), batch)]


def poisson_arrivals(rate_per_s: float, n_requests: int, seed: int) -> list[int]:
    """Arrival times (integer ns) of a Poisson process of ``rate_per_s`` starting at 0.

    Gaps are exponential with mean 1e9 / rate ns, each rounded to an integer
    ns before the running sum, so the times are exact integers and
    non-decreasing; the first arrival is one gap after 0.
    """
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ConfigError("rate_per_s", rate_per_s, "a finite number > 0")
    if n_requests < 0:
        raise ConfigError("n_requests", n_requests, "an integer >= 0")
    gaps = np.random.default_rng(seed).exponential(NS_PER_S / rate_per_s, size=n_requests)
    return [int(t) for t in np.cumsum(np.rint(gaps).astype(np.int64))]
