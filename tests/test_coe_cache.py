"""HBM expert cache: exact hits/misses/evictions on a hand-made trace (pure, tier 1)."""

from __future__ import annotations

import pytest

from sn40l_emu.coe.cache import (
    POLICIES,
    CachePolicy,
    ExpertCache,
    ExpertTooLargeError,
    PinnedCapacityError,
    replay,
)
from sn40l_emu.coe.eviction import EvictionPolicy
from sn40l_emu.errors import ConfigError, OutOfMemory

SHARD = 100  # bytes per expert shard
TRACE = [1, 2, 1, 3, 2, 1, 4, 1, 2, 3]


def run(policy: CachePolicy, trace: list[int] = TRACE, capacity: int = 2 * SHARD) -> ExpertCache:
    cache = ExpertCache(capacity, policy, future=trace if policy is CachePolicy.OPT else None)
    for seq, expert in enumerate(trace):
        cache.access(expert, SHARD, seq)
    return cache


def evicted_sequence(policy: CachePolicy) -> list[int]:
    cache = ExpertCache(2 * SHARD, policy, future=TRACE if policy is CachePolicy.OPT else None)
    out: list[int] = []
    for seq, expert in enumerate(TRACE):
        out.extend(cache.access(expert, SHARD, seq).evicted)
    return out


def test_lru_exact_counts() -> None:
    # capacity 2; H = hit, M = miss (evicted)
    # 1 M, 2 M, 1 H, 3 M(2), 2 M(1), 1 M(3), 4 M(2), 1 H, 2 M(4), 3 M(1)
    cache = run(CachePolicy.LRU)
    assert (cache.hits, cache.misses, cache.evictions) == (2, 8, 6)
    assert evicted_sequence(CachePolicy.LRU) == [2, 1, 3, 2, 4, 1]
    assert cache.resident() == (2, 3)


def test_lfu_exact_counts() -> None:
    # in-cache counts: 1 M, 2 M, 1 H(1:2), 3 M(2), 2 M(3), 1 H(1:3), 4 M(2), 1 H, 2 M(4), 3 M(2)
    cache = run(CachePolicy.LFU)
    assert (cache.hits, cache.misses, cache.evictions) == (3, 7, 5)
    assert evicted_sequence(CachePolicy.LFU) == [2, 3, 2, 4, 2]
    assert cache.resident() == (1, 3)


def test_opt_exact_counts_and_bound() -> None:
    # farthest next use: 1 M, 2 M, 1 H, 3 M(1: next@5 > 2: next@4), 2 H, 1 M(3: next@9),
    # 4 M(2: next@8), 1 H, 2 M(1 and 4 never again -> lowest id 1), 3 M(2, 4 never -> 2)
    cache = run(CachePolicy.OPT)
    assert (cache.hits, cache.misses, cache.evictions) == (3, 7, 5)
    assert evicted_sequence(CachePolicy.OPT) == [1, 3, 2, 1, 2]
    assert cache.misses <= run(CachePolicy.LRU).misses
    assert cache.misses <= run(CachePolicy.LFU).misses


def test_opt_is_a_bound_on_a_longer_trace() -> None:
    trace = [(i * 7 + i // 3) % 6 for i in range(200)]
    for capacity in (1, 2, 3, 5):
        opt = run(CachePolicy.OPT, trace, capacity * SHARD).misses
        assert opt <= run(CachePolicy.LRU, trace, capacity * SHARD).misses
        assert opt <= run(CachePolicy.LFU, trace, capacity * SHARD).misses


def test_lfu_ties_least_recent_then_lowest_id() -> None:
    cache = ExpertCache(2 * SHARD, CachePolicy.LFU)
    cache.access(1, SHARD, 0)
    cache.access(2, SHARD, 1)
    assert cache.access(3, SHARD, 2).evicted == (1,)  # counts equal, 1 least recent
    cache = ExpertCache(2 * SHARD, CachePolicy.LFU)
    cache.access(5, SHARD, 0)
    cache.access(3, SHARD, 0)  # same count, same sequence number
    assert cache.access(7, SHARD, 1).evicted == (3,)


def test_lru_same_seq_tie_is_lowest_id_not_insertion_order() -> None:
    for order in ([5, 3], [3, 5]):
        cache = ExpertCache(2 * SHARD, CachePolicy.LRU)
        for e in order:
            cache.access(e, SHARD, 0)
        assert cache.access(9, SHARD, 1).evicted == (3,)


def test_eviction_copies_nothing_back() -> None:
    cache = ExpertCache(2 * SHARD, CachePolicy.LRU)
    results = [cache.access(e, SHARD, i) for i, e in enumerate(TRACE)]
    assert any(r.evicted for r in results)
    assert all(r.writeback_bytes == 0 for r in results)
    assert [r.load_bytes for r in results] == [0 if r.hit else SHARD for r in results]
    assert cache.stats().loaded_bytes == cache.misses * SHARD


def test_registry_covers_every_policy() -> None:
    assert set(POLICIES) == set(CachePolicy)
    assert all(issubclass(cls, EvictionPolicy) for cls in POLICIES.values())


def test_opt_needs_future_and_checks_it() -> None:
    with pytest.raises(ConfigError, match="future"):
        ExpertCache(SHARD, CachePolicy.OPT)
    with pytest.raises(ConfigError, match="future"):
        ExpertCache(SHARD, CachePolicy.LRU, future=[1])
    cache = ExpertCache(SHARD, CachePolicy.OPT, future=[1, 2])
    with pytest.raises(ConfigError, match=r"future\[0\]"):
        cache.access(2, SHARD, 0)


def test_expert_larger_than_capacity() -> None:
    cache = ExpertCache(150, CachePolicy.LRU)
    with pytest.raises(ExpertTooLargeError, match="larger than the whole") as info:
        cache.access(4, 151, 0)
    assert isinstance(info.value, OutOfMemory)
    assert cache.resident() == () and cache.misses == 0


def test_variable_sizes_evict_until_fit() -> None:
    cache = ExpertCache(300, CachePolicy.LRU)
    cache.access(1, 100, 0)
    cache.access(2, 100, 1)
    cache.access(3, 100, 2)
    assert cache.access(4, 250, 3).evicted == (1, 2, 3)
    assert cache.free_bytes == 50


def test_pinned_experts_are_skipped() -> None:
    cache = ExpertCache(2 * SHARD, CachePolicy.LRU)
    cache.access(1, SHARD, 0, pin=True)
    cache.access(2, SHARD, 1)
    assert cache.access(3, SHARD, 2).evicted == (2,)  # 1 is least recent but pinned
    cache.unpin([1])
    assert cache.access(4, SHARD, 3).evicted == (1,)


def test_pins_block_and_error_names_how_many_fit() -> None:
    cache = ExpertCache(2 * SHARD, CachePolicy.LRU)
    cache.access(1, SHARD, 0, pin=True)
    cache.access(2, SHARD, 1, pin=True)
    with pytest.raises(PinnedCapacityError, match="only 2 shards") as info:
        cache.access(3, SHARD, 2)
    assert (info.value.needed, info.value.fit) == (3, 2)
    assert cache.resident() == (1, 2) and cache.misses == 2  # unchanged
    cache.unpin_all()
    assert cache.access(3, SHARD, 2).evicted == (1,)


def test_batch_pins_all_its_experts_or_fails_first() -> None:
    cache = ExpertCache(3 * SHARD, CachePolicy.LRU)
    with pytest.raises(PinnedCapacityError, match="only 3 shards") as info:
        cache.access_batch([1, 2, 3, 4, 1], SHARD, 0)
    assert (info.value.needed, info.value.fit) == (4, 3)
    assert cache.resident() == () and cache.misses == 0
    results = cache.access_batch([1, 2, 1, 3], SHARD, 0)
    assert [r.hit for r in results] == [False, False, True, False]
    assert cache.pinned() == (1, 2, 3)
    cache.unpin([1])  # prompt 0 done; prompt 2 still needs expert 1
    assert cache.pinned() == (1, 2, 3)
    cache.unpin([2, 1, 3])
    assert cache.pinned() == ()
    with pytest.raises(ValueError, match="not pinned"):
        cache.unpin([1])


def test_batch_counts_experts_still_pinned_from_before() -> None:
    cache = ExpertCache(3 * SHARD, CachePolicy.LRU)
    cache.access_batch([1, 2], SHARD, 0)
    with pytest.raises(PinnedCapacityError):
        cache.access_batch([3, 4], SHARD, 2)
    cache.unpin_all()
    assert [r.evicted for r in cache.access_batch([3, 4], SHARD, 2)] == [(), (1,)]


def test_sequence_and_size_checks() -> None:
    cache = ExpertCache(2 * SHARD, CachePolicy.LRU)
    cache.access(1, SHARD, 5)
    with pytest.raises(ValueError, match="backwards"):
        cache.access(2, SHARD, 4)
    with pytest.raises(ValueError, match="resident with"):
        cache.access(1, SHARD + 1, 6)
    with pytest.raises(ConfigError):
        cache.access(2, 0, 6)


def test_same_sequence_same_result() -> None:
    for policy in CachePolicy:
        a = run(policy, TRACE * 3)
        b = run(policy, TRACE * 3)
        assert (a.stats(), a.resident()) == (b.stats(), b.resident())


def test_replay_matches_step_by_step() -> None:
    for policy in CachePolicy:
        assert replay(TRACE, SHARD, 2 * SHARD, policy) == run(policy).stats()
    assert replay(TRACE, SHARD, 2 * SHARD).hit_rate == pytest.approx(0.2)
