"""Mean and 95 % confidence interval of a figure sampled over seeds.

A CoE row is a random draw (which expert each prompt picks, when requests
arrive). One draw cannot tell a trend from noise, so the sampled commands run
each row once per seed and report the mean with a two-sided 95 % confidence
interval from Student's t distribution with n - 1 degrees of freedom:
``mean +- t(0.975, n - 1) * s / sqrt(n)``, ``s`` the sample standard deviation
(``ddof=1``). The seeds are independent draws of the same workload, so the
interval is on the mean over draws; it assumes roughly normal sample means,
which is why it is a guide for "is this difference noise", not a proof.

With one seed there is no interval (``None``: a blank cell, never 0).
Seeds are consecutive from ``--seed``: ``--seed 0 --seeds 5`` is 0, 1, 2, 3, 4,
so the same config and seeds give the same nanoseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CONFIDENCE = 0.95
MAX_SEEDS = 1000  # a sanity limit on --seeds (each seed is a full run of the row)


def t_quantile(dof: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


def mean_ci95(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95 % CI); the half-width is None for fewer than two values."""
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_quantile(n - 1) * math.sqrt(var) / math.sqrt(n)


def seed_list(seed: int, n_seeds: int) -> list[int]:
    """The seeds of a run: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return list(range(seed, seed + n_seeds))


def ci_key(key: str) -> str:
    """The CI column of a figure: ``total_ns`` -> ``total_ci95_ns``, ``hit_rate`` -> ``hit_rate_ci95``."""
    return key[:-3] + "_ci95_ns" if key.endswith("_ns") else key + "_ci95"


def aggregate(samples: Sequence[Mapping[str, Any]], keys: Sequence[str], *,
              integer_ns: bool = True) -> dict[str, Any]:
    """Per key: the mean under the key itself and the CI half-width under :func:`ci_key`.

    A ``*_ns`` mean is rounded to whole nanoseconds (virtual time is integer ns)
    when ``integer_ns``; the CI is kept exact. A key missing or None in some sample
    is averaged over the samples that have it (None when none has it).
    """
    out: dict[str, Any] = {}
    for k in keys:
        vals = [float(s[k]) for s in samples if s.get(k) is not None]
        if not vals:
            out[k], out[ci_key(k)] = None, None
            continue
        mean, half = mean_ci95(vals)
        out[k] = int(round(mean)) if integer_ns and k.endswith("_ns") else mean
        out[ci_key(k)] = half
    return out


def overlap(a: float, a_ci: float | None, b: float, b_ci: float | None) -> bool:
    """Whether two means differ by no more than their CIs together (the difference may be noise)."""
    if a_ci is None or b_ci is None:
        return False
    return abs(a - b) <= a_ci + b_ci
