"""Eviction policies of the HBM expert cache, chosen through an Enum registry.

docs/model.md §4 asks for least-recently-used eviction. LFU is offered as a
comparison, and OPT (Belady's offline optimum) as a lower bound on misses: it
is not a runnable policy (it needs the future), it tells how far LRU is from
the best any policy could do on the same access sequence.

A policy only keeps its own bookkeeping and names a victim among the
candidates the cache hands it (resident, unpinned, not the expert being
loaded). Every tie is broken on values (sequence numbers, expert ids), never on
the order in which the cache happened to store things, so one access sequence
always gives one eviction sequence.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum

from sn40l_emu.errors import ConfigError


class CachePolicy(str, Enum):
    """Which expert the HBM cache evicts when it needs room."""

    LRU = "lru"
    LFU = "lfu"
    OPT = "opt"


class EvictionPolicy(ABC):
    """Bookkeeping plus victim choice; the cache owns residency and sizes."""

    def validate(self, expert_id: int, now_seq: int) -> None:
        """Refuse an access before the cache changes anything (default: accept all)."""
        return None

    @abstractmethod
    def on_access(self, expert_id: int, now_seq: int, hit: bool) -> None:
        """Record that ``expert_id`` was used at ``now_seq`` (after it is resident)."""

    @abstractmethod
    def on_evict(self, expert_id: int) -> None:
        """Forget what only mattered while ``expert_id`` was resident."""

    @abstractmethod
    def victim(self, candidates: Sequence[int], now_seq: int) -> int:
        """The candidate to evict; ``candidates`` is non-empty."""


class LruPolicy(EvictionPolicy):
    """Least recently used (docs/model.md §4); ties (same sequence number) -> lowest id."""

    def __init__(self) -> None:
        self._last_seq: dict[int, int] = {}

    def on_access(self, expert_id: int, now_seq: int, hit: bool) -> None:
        self._last_seq[expert_id] = now_seq

    def on_evict(self, expert_id: int) -> None:
        self._last_seq.pop(expert_id, None)

    def victim(self, candidates: Sequence[int], now_seq: int) -> int:
        return min(candidates, key=lambda e: (self._last_seq[e], e))


class LfuPolicy(EvictionPolicy):
    """Least frequently used since the expert last became resident.

    The count restarts at eviction (in-cache LFU): an expert that was popular
    long ago gets no credit for it after it has left HBM. Ties go to the least
    recently used, then to the lowest id.
    """

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._last_seq: dict[int, int] = {}

    def on_access(self, expert_id: int, now_seq: int, hit: bool) -> None:
        self._count[expert_id] = self._count.get(expert_id, 0) + 1
        self._last_seq[expert_id] = now_seq

    def on_evict(self, expert_id: int) -> None:
        self._count.pop(expert_id, None)
        self._last_seq.pop(expert_id, None)

    def victim(self, candidates: Sequence[int], now_seq: int) -> int:
        return min(candidates, key=lambda e: (self._count[e], self._last_seq[e], e))


class OptPolicy(EvictionPolicy):
    """Belady's offline optimum: evict the expert whose next use is farthest away.

    ``future`` is the whole access sequence (one expert id per access, in
    order); ``now_seq`` of an access is its index in it. Experts never used
    again go first; ties (several never used again) -> lowest id. With equal
    expert sizes this gives the fewest misses any policy can reach; with mixed
    sizes it is the usual farthest-next-use heuristic, no longer exact.
    """

    def __init__(self, future: Sequence[int]) -> None:
        self._future = tuple(int(e) for e in future)
        positions: dict[int, list[int]] = {}
        for seq, expert_id in enumerate(self._future):
            positions.setdefault(expert_id, []).append(seq)
        self._positions = positions

    def validate(self, expert_id: int, now_seq: int) -> None:
        """Refuse an access that is not the one the future sequence announced."""
        if not 0 <= now_seq < len(self._future) or self._future[now_seq] != expert_id:
            expected = self._future[now_seq] if 0 <= now_seq < len(self._future) else "<end>"
            raise ConfigError(
                f"future[{now_seq}]", expert_id,
                f"the expert the OPT future sequence holds at that index ({expected})",
            )

    def next_use(self, expert_id: int, now_seq: int) -> int:
        """Index of the next access to ``expert_id`` after ``now_seq``; len(future) if none."""
        seqs = self._positions.get(expert_id, [])
        i = bisect.bisect_right(seqs, now_seq)
        return seqs[i] if i < len(seqs) else len(self._future)

    def on_access(self, expert_id: int, now_seq: int, hit: bool) -> None:
        return None

    def on_evict(self, expert_id: int) -> None:
        return None

    def victim(self, candidates: Sequence[int], now_seq: int) -> int:
        return min(candidates, key=lambda e: (-self.next_use(e, now_seq), e))


POLICIES: dict[CachePolicy, type[EvictionPolicy]] = {
    CachePolicy.LRU: LruPolicy,
    CachePolicy.LFU: LfuPolicy,
    CachePolicy.OPT: OptPolicy,
}


def make_policy(policy: CachePolicy, future: Sequence[int] | None = None) -> EvictionPolicy:
    """Build a policy from the registry; OPT needs ``future``, the others refuse it."""
    cls = POLICIES[CachePolicy(policy)]
    if cls is OptPolicy:
        if future is None:
            raise ConfigError("future", None, "the whole access sequence (expert ids) for OPT")
        return OptPolicy(future)
    if future is not None:
        raise ConfigError("future", "<sequence>",
                          f"None for {CachePolicy(policy).value} (only opt reads it)")
    return cls()
