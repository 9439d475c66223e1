"""The HBM expert cache: which experts sit in the HBM region set aside for them.

docs/model.md §4: keep as many experts active in HBM as fit, evict the least
recently used, start at once on a hit. Every expert is TP8-sharded, so each
socket holds 1/8 of it and all sockets hold the same set; the cache therefore
works in *per-socket shard bytes* and one cache stands for every socket.

Weights are read-only: an eviction drops the HBM copy and copies nothing back
to DDR. ``AccessResult.writeback_bytes`` is kept (always 0) so that a report
shows this instead of leaving it implied.

A batch of B prompts may need up to B experts at once (docs/model.md §4: copy them
all in, then run the pairs one after another). The batch pins them so that
loading the fifth cannot evict the first before it has run. Pins are counted
per access, so a batch can release an expert prompt by prompt and it stays
pinned while a later prompt of the batch still needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sn40l_emu.coe.eviction import POLICIES, CachePolicy, EvictionPolicy, make_policy
from sn40l_emu.errors import ConfigError, OutOfMemory

__all__ = [
    "POLICIES",
    "AccessResult",
    "CachePolicy",
    "CacheStats",
    "ExpertCache",
    "ExpertTooLargeError",
    "PinnedCapacityError",
    "replay",
]

_TIER = "HBM expert region"


class ExpertTooLargeError(OutOfMemory):
    """One expert's shard is larger than the whole expert region of HBM."""

    def __init__(self, expert_id: int, shard_bytes: int, capacity_bytes: int) -> None:
        super().__init__(_TIER, shard_bytes, capacity_bytes, what=f"expert {expert_id} shard")
        self.expert_id = expert_id
        self.capacity_bytes = capacity_bytes
        self.args = (
            f"expert {expert_id}: shard of {shard_bytes} B is larger than the whole "
            f"{_TIER} ({capacity_bytes} B per socket); it can never be resident",
        )


class PinnedCapacityError(OutOfMemory):
    """The experts that must be resident at once (pinned) do not all fit."""

    def __init__(self, needed: int, fit: int, shard_bytes: int, capacity_bytes: int,
                 pinned: Sequence[int]) -> None:
        super().__init__(_TIER, needed * shard_bytes, capacity_bytes, what="pinned experts")
        self.needed = needed
        self.fit = fit
        self.pinned = tuple(pinned)
        self.args = (
            f"{needed} experts must be resident at once (pinned: {list(self.pinned)}) but only "
            f"{fit} shards of {shard_bytes} B fit in the {_TIER} of {capacity_bytes} B per "
            f"socket; use a batch of at most {fit} distinct experts or a larger region",
        )


@dataclass(frozen=True)
class AccessResult:
    """What one access did: hit or miss, what it evicted, what must be copied in."""

    expert_id: int
    hit: bool
    evicted: tuple[int, ...]  # in eviction order
    load_bytes: int  # per-socket shard bytes to copy DDR/host -> HBM (0 on a hit)
    writeback_bytes: int = 0  # always 0: weights are read-only, eviction copies nothing back


@dataclass(frozen=True)
class CacheStats:
    """Counters since construction."""

    hits: int
    misses: int
    evictions: int
    loaded_bytes: int  # per-socket shard bytes copied in over all misses

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ExpertCache:
    """Residency of expert shards in the per-socket HBM expert region.

    ``now_seq`` is the index of the access in the access sequence (one access
    per prompt); it must not decrease. For ``CachePolicy.OPT`` pass ``future``,
    the whole sequence of expert ids, and ``now_seq`` must index it.
    """

    def __init__(self, capacity_bytes: int, policy: CachePolicy = CachePolicy.LRU,
                 future: Sequence[int] | None = None) -> None:
        if capacity_bytes < 0:
            raise ConfigError("capacity_bytes", capacity_bytes, ">= 0")
        self._capacity_bytes = int(capacity_bytes)
        self._policy_kind = CachePolicy(policy)
        self._policy: EvictionPolicy = make_policy(self._policy_kind, future)
        self._size_bytes: dict[int, int] = {}  # resident expert -> shard bytes
        self._pins: dict[int, int] = {}  # expert -> outstanding pinned accesses
        self._last_seq = -1
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._loaded_bytes = 0

    # --- state -----------------------------------------------------------------
    @property
    def capacity_bytes(self) -> int:
        return self._capacity_bytes

    @property
    def policy(self) -> CachePolicy:
        return self._policy_kind

    @property
    def used_bytes(self) -> int:
        return sum(self._size_bytes.values())

    @property
    def free_bytes(self) -> int:
        return self._capacity_bytes - self.used_bytes

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def evictions(self) -> int:
        return self._evictions

    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._evictions, self._loaded_bytes)

    def resident(self) -> tuple[int, ...]:
        """Resident expert ids, ascending (an order that does not depend on history)."""
        return tuple(sorted(self._size_bytes))

    def __contains__(self, expert_id: object) -> bool:
        return expert_id in self._size_bytes

    def pinned(self) -> tuple[int, ...]:
        """Expert ids with at least one outstanding pin, ascending."""
        return tuple(sorted(e for e, n in self._pins.items() if n > 0))

    def slots(self, shard_bytes: int) -> int:
        """How many shards of ``shard_bytes`` fit in the region at once."""
        if shard_bytes <= 0:
            raise ConfigError("shard_bytes", shard_bytes, "> 0")
        return self._capacity_bytes // shard_bytes

    # --- accesses --------------------------------------------------------------
    def access(self, expert_id: int, shard_bytes: int, now_seq: int, *,
               pin: bool = False) -> AccessResult:
        """Use ``expert_id`` now: a hit, or a miss that evicts until its shard fits.

        Nothing changes if the access raises (too large, pinned experts in the
        way, a sequence number going backwards, an OPT future that disagrees).
        """
        self._check_access(expert_id, shard_bytes, now_seq)
        hit = expert_id in self._size_bytes
        victims: list[int] = []
        if not hit:
            victims = self._choose_victims(expert_id, shard_bytes, now_seq)
            for victim in victims:
                del self._size_bytes[victim]
                self._policy.on_evict(victim)
            self._size_bytes[expert_id] = shard_bytes
        self._last_seq = now_seq
        self._policy.on_access(expert_id, now_seq, hit)
        if pin:
            self._pins[expert_id] = self._pins.get(expert_id, 0) + 1
        if hit:
            self._hits += 1
        else:
            self._misses += 1
            self._evictions += len(victims)
            self._loaded_bytes += shard_bytes
        return AccessResult(
            expert_id=expert_id, hit=hit, evicted=tuple(victims),
            load_bytes=0 if hit else shard_bytes,
            writeback_bytes=0,  # read-only weights: dropping an HBM copy writes nothing to DDR
        )

    def access_batch(self, expert_ids: Sequence[int], shard_bytes: int,
                     first_seq: int) -> tuple[AccessResult, ...]:
        """One pinned access per prompt of a batch, sequence numbers from ``first_seq``.

        Checks first that all distinct experts of the batch (plus any experts
        still pinned from before) fit at once, so a batch that cannot run
        fails before it changes anything. Release with :meth:`unpin`.
        """
        if not expert_ids:
            return ()
        slots = self.slots(shard_bytes)
        if slots == 0:
            raise ExpertTooLargeError(expert_ids[0], shard_bytes, self._capacity_bytes)
        distinct = set(expert_ids)
        held_elsewhere = [e for e in self.pinned() if e not in distinct]
        held_bytes = sum(self._size_bytes[e] for e in held_elsewhere)
        needed_bytes = len(distinct) * shard_bytes + held_bytes
        if needed_bytes > self._capacity_bytes:
            raise PinnedCapacityError(len(distinct) + len(held_elsewhere), slots, shard_bytes,
                                      self._capacity_bytes, sorted(distinct.union(held_elsewhere)))
        return tuple(self.access(e, shard_bytes, first_seq + i, pin=True)
                     for i, e in enumerate(expert_ids))

    def unpin(self, expert_ids: Iterable[int]) -> None:
        """Release one pin per id given (a batch's prompt has finished with its expert)."""
        for expert_id in expert_ids:
            count = self._pins.get(expert_id, 0)
            if count <= 0:
                raise ValueError(f"expert {expert_id} is not pinned")
            if count == 1:
                del self._pins[expert_id]
            else:
                self._pins[expert_id] = count - 1

    def unpin_all(self) -> None:
        """Release every pin (the batch is over)."""
        self._pins.clear()

    # --- internals -------------------------------------------------------------
    def _check_access(self, expert_id: int, shard_bytes: int, now_seq: int) -> None:
        if shard_bytes <= 0:
            raise ConfigError("shard_bytes", shard_bytes, "> 0")
        if now_seq < self._last_seq:
            raise ValueError(f"now_seq went backwards: {now_seq} after {self._last_seq}")
        if shard_bytes > self._capacity_bytes:
            raise ExpertTooLargeError(expert_id, shard_bytes, self._capacity_bytes)
        resident_bytes = self._size_bytes.get(expert_id)
        if resident_bytes is not None and resident_bytes != shard_bytes:
            raise ValueError(f"expert {expert_id} is resident with {resident_bytes} B "
                             f"but was accessed with {shard_bytes} B")
        self._policy.validate(expert_id, now_seq)

    def _choose_victims(self, expert_id: int, shard_bytes: int, now_seq: int) -> list[int]:
        """Victims, in order, that make room for ``shard_bytes``; raises if pins prevent it."""
        free = self.free_bytes
        candidates = sorted(e for e in self._size_bytes if self._pins.get(e, 0) == 0)
        victims: list[int] = []
        while free < shard_bytes:
            if not candidates:
                pinned = self.pinned()
                raise PinnedCapacityError(len(pinned) + 1, self._capacity_bytes // shard_bytes,
                                          shard_bytes, self._capacity_bytes,
                                          sorted({*pinned, expert_id}))
            victim = self._policy.victim(candidates, now_seq)
            candidates.remove(victim)
            victims.append(victim)
            free += self._size_bytes[victim]
        return victims


def replay(expert_ids: Sequence[int], shard_bytes: int, capacity_bytes: int,
           policy: CachePolicy = CachePolicy.LRU) -> CacheStats:
    """Counters of one policy over a whole access sequence (OPT reads it as its future).

    For comparing policies on the same routing trace, e.g. how far LRU is
    from the OPT bound.
    """
    future = expert_ids if CachePolicy(policy) is CachePolicy.OPT else None
    cache = ExpertCache(capacity_bytes, policy, future=future)
    for seq, expert_id in enumerate(expert_ids):
        cache.access(expert_id, shard_bytes, seq)
    return cache.stats()
