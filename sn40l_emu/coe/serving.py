"""Serving mode: a FIFO queue in front of one batching server, in virtual time.

Requests arrive at ``arrival_ns`` and wait in FIFO order (ties in arrival
time go to the lower request id, never to list order). Whenever the server is
free it takes up to ``max_batch`` waiting requests and hands them to the
caller's ``serve`` callback, which says how long the batch takes and when
each request in it finishes (the cost model lives with the caller, here only
the queue). If nothing is waiting the server idles until the next arrival; it
never waits to fill a batch.

Reported:

- throughput = requests / (end - first arrival), in requests/s of virtual
  time, where end is when the server finishes its last batch (the last
  completion, unless the callback reports idle time after it);
- latency = completion - arrival per request, and its p50/p90/p99 by the
  nearest-rank method: with the n latencies sorted ascending, the P-th
  percentile is the value at 1-based rank ceil(P/100 * n). It is always one of
  the measured values (an integer ns), never an interpolation;
- cache hit rate, when the callback reports hits and misses;
- per request, when the callback reports first-token offsets: time to first
  token (TTFT = end of its prefill - arrival) and time per output token
  (TPOT = (completion - first token) / (output tokens - 1)); see
  :mod:`sn40l_emu.coe.serving_metrics` for means, percentiles and goodput.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from sn40l_emu.coe.workload import Request
from sn40l_emu.errors import ConfigError, EmuError
from sn40l_emu.units import NS_PER_S


class BatchTimingError(EmuError):
    """The ``serve`` callback returned a timing that cannot describe its batch."""


@dataclass(frozen=True)
class BatchTiming:
    """What serving one batch cost, as the callback reports it."""

    total_ns: int  # the server is busy this long
    completion_offsets_ns: tuple[int, ...]  # per request, batch order, from batch start
    hits: int | None = None  # expert-cache hits in this batch, if the callback tracks them
    misses: int | None = None
    #: per request, batch order, from batch start: when its first output token exists
    #: (end of its prefill); None when the callback does not say
    first_token_offsets_ns: tuple[int, ...] | None = None


ServeFn = Callable[[list[Request]], BatchTiming]


@dataclass(frozen=True)
class RequestRecord:
    """One served request."""

    request_id: int
    expert: int
    arrival_ns: int
    start_ns: int  # when its batch started
    completion_ns: int
    batch_index: int
    first_token_ns: int | None = None  # end of its prefill (None: the callback did not say)
    output_tokens: int = 1

    @property
    def ttft_ns(self) -> int | None:
        """Time to first token: arrival to the end of its prefill."""
        return None if self.first_token_ns is None else self.first_token_ns - self.arrival_ns

    @property
    def tpot_ns(self) -> float | None:
        """Time per output token after the first (None for a one-token request)."""
        if self.first_token_ns is None or self.output_tokens < 2:
            return None
        return (self.completion_ns - self.first_token_ns) / (self.output_tokens - 1)

    @property
    def latency_ns(self) -> int:
        return self.completion_ns - self.arrival_ns

    @property
    def queue_ns(self) -> int:
        return self.start_ns - self.arrival_ns


@dataclass(frozen=True)
class ServingResult:
    """The outcome of a serving run (see the module docstring for definitions)."""

    records: tuple[RequestRecord, ...]  # ascending request id
    n_batches: int
    first_arrival_ns: int
    last_completion_ns: int
    end_ns: int  # when the server finished its last batch
    busy_ns: int  # sum of batch times
    throughput_per_s: float
    latency_p50_ns: int
    latency_p90_ns: int
    latency_p99_ns: int
    hits: int | None
    misses: int | None

    @property
    def hit_rate(self) -> float | None:
        if self.hits is None or self.misses is None or self.hits + self.misses == 0:
            return None
        return self.hits / (self.hits + self.misses)


def percentile_nearest_rank(values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile: sorted ascending, the value at rank ceil(pct/100 * n), min 1.

    ``pct`` is read through its decimal text (``Fraction(str(pct))``) so that
    e.g. 90 of 10 values is rank 9 exactly, not 9.000000000000002 -> 10.
    """
    if not values:
        raise ConfigError("values", "[]", "at least one value")
    if not 0 < pct <= 100:
        raise ConfigError("pct", pct, "0 < pct <= 100")
    ordered = sorted(values)
    n = len(ordered)
    exact = Fraction(str(pct)) * n / 100
    rank = max(1, -(-exact.numerator // exact.denominator))
    return ordered[rank - 1]


def _check_timing(timing: BatchTiming, batch: list[Request]) -> None:
    if timing.total_ns <= 0:
        raise BatchTimingError(f"batch of {len(batch)}: total_ns {timing.total_ns} must be > 0")
    if len(timing.completion_offsets_ns) != len(batch):
        raise BatchTimingError(f"batch of {len(batch)}: got "
                               f"{len(timing.completion_offsets_ns)} completion offsets")
    for offset in timing.completion_offsets_ns:
        if not 0 <= offset <= timing.total_ns:
            raise BatchTimingError(f"completion offset {offset} ns outside 0..{timing.total_ns}")
    if (timing.hits is None) != (timing.misses is None):
        raise BatchTimingError("report both hits and misses, or neither")
    first = timing.first_token_offsets_ns
    if first is not None and (len(first) != len(batch) or any(
            not 0 <= f <= c for f, c in zip(first, timing.completion_offsets_ns, strict=True))):
        raise BatchTimingError("first-token offsets must be one per request, each within "
                               "0..its completion offset")


def simulate_serving(requests: Sequence[Request], max_batch: int, serve: ServeFn) -> ServingResult:
    """Run the FIFO batching queue over ``requests`` (deterministic if ``serve`` is)."""
    if max_batch < 1:
        raise ConfigError("max_batch", max_batch, "an integer >= 1")
    if not requests:
        raise ConfigError("requests", "[]", "at least one request")
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ConfigError("requests", "duplicate ids", "unique request ids")
    pending = sorted(requests, key=lambda r: (r.arrival_ns, r.id))
    waiting: deque[Request] = deque()
    records: list[RequestRecord] = []
    now_ns = pending[0].arrival_ns
    next_i = 0
    busy_ns = 0
    n_batches = 0
    hits: int | None = None
    misses: int | None = None
    while next_i < len(pending) or waiting:
        if not waiting:
            now_ns = max(now_ns, pending[next_i].arrival_ns)
        while next_i < len(pending) and pending[next_i].arrival_ns <= now_ns:
            waiting.append(pending[next_i])
            next_i += 1
        batch = [waiting.popleft() for _ in range(min(max_batch, len(waiting)))]
        timing = serve(list(batch))
        _check_timing(timing, batch)
        firsts = timing.first_token_offsets_ns or (None,) * len(batch)
        for request, offset, first in zip(batch, timing.completion_offsets_ns, firsts, strict=True):
            records.append(RequestRecord(request.id, request.expert, request.arrival_ns,
                                         now_ns, now_ns + offset, n_batches,
                                         None if first is None else now_ns + first,
                                         request.output_tokens))
        if timing.hits is not None and timing.misses is not None:
            hits = (hits or 0) + timing.hits
            misses = (misses or 0) + timing.misses
        now_ns += timing.total_ns
        busy_ns += timing.total_ns
        n_batches += 1
    latencies = [r.latency_ns for r in records]
    first_arrival = pending[0].arrival_ns
    last_completion = max(r.completion_ns for r in records)
    return ServingResult(
        records=tuple(sorted(records, key=lambda r: r.request_id)),
        n_batches=n_batches,
        first_arrival_ns=first_arrival,
        last_completion_ns=last_completion,
        end_ns=now_ns,
        busy_ns=busy_ns,
        throughput_per_s=len(records) * NS_PER_S / (now_ns - first_arrival),
        latency_p50_ns=percentile_nearest_rank(latencies, 50),
        latency_p90_ns=percentile_nearest_rank(latencies, 90),
        latency_p99_ns=percentile_nearest_rank(latencies, 99),
        hits=hits,
        misses=misses,
    )
