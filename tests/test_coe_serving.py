"""Serving-mode queue: hand-computed latencies, nearest-rank percentiles, determinism."""

from __future__ import annotations

import pytest

from sn40l_emu.coe.cache import CachePolicy, ExpertCache
from sn40l_emu.coe.serving import (
    BatchTiming,
    BatchTimingError,
    percentile_nearest_rank,
    simulate_serving,
)
from sn40l_emu.coe.workload import Request, parse_workload, poisson_arrivals, requests
from sn40l_emu.errors import ConfigError


def sequential_100ns(batch: list[Request]) -> BatchTiming:
    """Each request takes 100 ns, one after another."""
    return BatchTiming(100 * len(batch), tuple(100 * (j + 1) for j in range(len(batch))))


def reqs(arrivals: list[int]) -> list[Request]:
    return [Request(i, 0, 8, 20, t) for i, t in enumerate(arrivals)]


def test_hand_computed_example() -> None:
    # B=2. t=0: r0 alone (r1 not yet here) -> done 100.  t=100: r1,r2,r3 waiting; serve r1,r2
    # -> done 200, 300.  t=300: r3 and r4 (arrived 200) -> done 400, 500.
    result = simulate_serving(reqs([0, 10, 20, 30, 200]), 2, sequential_100ns)
    lat = [r.latency_ns for r in result.records]
    assert lat == [100, 190, 280, 370, 300]
    assert [r.batch_index for r in result.records] == [0, 1, 1, 2, 2]
    assert [r.queue_ns for r in result.records] == [0, 90, 80, 270, 100]
    assert result.n_batches == 3
    assert (result.first_arrival_ns, result.last_completion_ns, result.end_ns) == (0, 500, 500)
    # sorted 100,190,280,300,370: p50 rank ceil(2.5)=3, p90 rank ceil(4.5)=5, p99 rank 5
    assert (result.latency_p50_ns, result.latency_p90_ns, result.latency_p99_ns) == (280, 370, 370)
    assert result.throughput_per_s == pytest.approx(5 / 500e-9)
    assert result.hit_rate is None


def test_idle_server_waits_for_next_arrival() -> None:
    result = simulate_serving(reqs([1000, 5000]), 8, sequential_100ns)
    assert [r.completion_ns for r in result.records] == [1100, 5100]
    assert result.busy_ns == 200 and result.n_batches == 2
    assert result.throughput_per_s == pytest.approx(2 / 4100e-9)


def test_nearest_rank() -> None:
    values = list(range(10, 110, 10))  # 10..100
    assert percentile_nearest_rank(values, 90) == 90  # rank 9 exactly, not 10
    assert percentile_nearest_rank(values, 50) == 50
    assert percentile_nearest_rank(values, 99) == 100
    assert percentile_nearest_rank(values, 100) == 100
    assert percentile_nearest_rank(values, 0.1) == 10
    assert percentile_nearest_rank([7], 50) == 7
    with pytest.raises(ConfigError):
        percentile_nearest_rank([], 50)
    with pytest.raises(ConfigError):
        percentile_nearest_rank([1], 0)


def test_ties_in_arrival_go_to_lower_id_not_list_order() -> None:
    rs = reqs([0, 0, 0])
    forward = simulate_serving(rs, 1, sequential_100ns)
    backward = simulate_serving(list(reversed(rs)), 1, sequential_100ns)
    assert forward == backward
    assert [r.completion_ns for r in forward.records] == [100, 200, 300]


def test_cache_hit_rate_from_callback() -> None:
    cache = ExpertCache(2, CachePolicy.LRU)
    seq = [0]

    def serve(batch: list[Request]) -> BatchTiming:
        hits = 0
        for r in batch:
            hits += cache.access(r.expert, 1, seq[0]).hit
            seq[0] += 1
        return BatchTiming(10, (10,) * len(batch), hits=hits, misses=len(batch) - hits)

    rs = [Request(i, e, 8, 20, 0) for i, e in enumerate([1, 2, 1, 3, 2, 1, 4, 1, 2, 3])]
    result = simulate_serving(rs, 4, serve)
    assert (result.hits, result.misses) == (2, 8)  # the LRU trace of test_coe_cache
    assert result.hit_rate == pytest.approx(0.2)


def test_deterministic_poisson_run() -> None:
    def run() -> object:
        arrivals = poisson_arrivals(1000.0, 200, seed=4)
        rs = requests(parse_workload("zipf:1.0"), 16, 200, 64, 20, seed=4, arrivals_ns=arrivals)
        return simulate_serving(rs, 8, lambda b: BatchTiming(
            500_000 + 100_000 * len(b), tuple(500_000 + 100_000 * (j + 1) for j in range(len(b)))))
    assert run() == run()


def test_bad_timing_and_arguments() -> None:
    with pytest.raises(BatchTimingError, match="offsets"):
        simulate_serving(reqs([0, 0]), 2, lambda b: BatchTiming(10, (10,)))
    with pytest.raises(BatchTimingError, match="outside"):
        simulate_serving(reqs([0]), 1, lambda b: BatchTiming(10, (11,)))
    with pytest.raises(BatchTimingError, match="> 0"):
        simulate_serving(reqs([0]), 1, lambda b: BatchTiming(0, (0,)))
    with pytest.raises(BatchTimingError, match="both"):
        simulate_serving(reqs([0]), 1, lambda b: BatchTiming(1, (1,), hits=1))
    with pytest.raises(ConfigError, match="max_batch"):
        simulate_serving(reqs([0]), 0, sequential_100ns)
    with pytest.raises(ConfigError, match="requests"):
        simulate_serving([], 1, sequential_100ns)
    with pytest.raises(ConfigError, match="unique"):
        simulate_serving([Request(0, 0, 1, 1, 0)] * 2, 1, sequential_100ns)
