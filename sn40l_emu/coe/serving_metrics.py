"""What a serving run means to an operator: latency, TTFT, TPOT and goodput against an SLO.

Definitions (all from the served requests' records, virtual ns):

- latency = completion - arrival; TTFT = first token - arrival (the first
  token exists when the request's prefill ends); TPOT = (completion - first
  token) / (output tokens - 1), for requests of two or more output tokens;
- percentiles by the nearest-rank method (:func:`percentile_nearest_rank`:
  always one of the measured values), means as plain averages;
- goodput = requests that met the SLO per second of the run (first arrival to
  the last completion), where a request meets it when its TTFT <= ``ttft_ns``
  and its TPOT <= ``tpot_ns`` (a one-token request has no TPOT and meets that
  half), and its latency <= ``latency_ns`` -- each bound only when given.
  This is the per-request SLO attainment used for LLM serving (DistServe,
  Zhong et al., OSDI 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sn40l_emu.coe.serving import RequestRecord, percentile_nearest_rank
from sn40l_emu.errors import ConfigError
from sn40l_emu.units import NS_PER_S

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    """Per-request service-level objective; a bound left None is not checked."""

    ttft_ns: int | None = None
    tpot_ns: int | None = None
    latency_ns: int | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ns", "tpot_ns", "latency_ns"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"slo.{name}", v, "> 0 ns, or not given")


def _summary(prefix: str, values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {f"{prefix}_mean_ns": None, **{f"{prefix}_p{p}_ns": None for p in PERCENTILES}}
    out: dict[str, float | int | None] = {f"{prefix}_mean_ns": float(np.mean(values))}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}_ns"] = percentile_nearest_rank(values, p)  # type: ignore[arg-type]
    return out


def meets(r: RequestRecord, slo: SLO) -> bool:
    """Whether one request met every bound the SLO gives."""
    if slo.latency_ns is not None and r.latency_ns > slo.latency_ns:
        return False
    ttft = r.ttft_ns
    if slo.ttft_ns is not None and (ttft is None or ttft > slo.ttft_ns):
        return False
    tpot = r.tpot_ns
    return not (slo.tpot_ns is not None and tpot is not None and tpot > slo.tpot_ns)


def serving_metrics(records: Sequence[RequestRecord], slo: SLO = SLO()) -> dict[str, float | int | None]:
    """Latency, TTFT and TPOT mean and p50/p90/p99, and goodput (see the module docstring)."""
    if not records:
        raise ConfigError("records", "[]", "at least one served request")
    out = _summary("latency", [r.latency_ns for r in records])
    out |= _summary("ttft", [t for r in records if (t := r.ttft_ns) is not None])
    out |= _summary("tpot", [tp for r in records if (tp := r.tpot_ns) is not None])
    first = min(r.arrival_ns for r in records)
    last = max(r.completion_ns for r in records)
    good = sum(1 for r in records if meets(r, slo))
    out["completed"] = len(records)
    out["slo_met"] = good
    out["slo_attainment"] = good / len(records)
    out["goodput_per_s"] = good * NS_PER_S / max(1, last - first)
    return out


def latency_cdf(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted latencies in ns, cumulative fraction) for a CDF plot."""
    lat = np.sort(np.array([r.latency_ns for r in records], dtype=np.int64))
    return lat, np.arange(1, lat.size + 1) / lat.size
