"""Memory tiers of one socket as allocators of named segments.

SRAM, HBM and DDR are software managed (docs/model.md §1): the compiler/runtime
places named symbols, so an allocator of named segments with a hard capacity
is the faithful model. Capacity is enforced with :class:`OutOfMemory` that
states the tier, the bytes requested and the bytes free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sn40l_emu.errors import EmuError, OutOfMemory
from sn40l_emu.program import Tier


@dataclass
class Segment:
    name: str
    tier: Tier
    size_bytes: int
    read_only: bool = False
    payload: np.ndarray | None = None  # functional mode: the real bytes


class TierAllocator:
    """Named segments in one tier; total size never exceeds the capacity."""

    def __init__(self, tier: Tier, capacity_bytes: int) -> None:
        self.tier = tier
        self.capacity_bytes = int(capacity_bytes)
        self._segments: dict[str, Segment] = {}
        self._used_bytes = 0

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self._used_bytes

    def alloc(self, name: str, size_bytes: int, *, read_only: bool = False,
              payload: np.ndarray | None = None) -> Segment:
        if size_bytes < 0:
            raise EmuError(f"segment {name!r}: negative size {size_bytes}")
        if name in self._segments:
            raise EmuError(f"segment {name!r} already allocated in {self.tier.value}")
        if payload is not None and payload.nbytes > size_bytes:
            raise EmuError(f"segment {name!r}: payload {payload.nbytes} B > size {size_bytes} B")
        if size_bytes > self.free_bytes:
            raise OutOfMemory(self.tier.value, size_bytes, self.free_bytes, name)
        seg = Segment(name, self.tier, int(size_bytes), read_only, payload)
        self._segments[name] = seg
        self._used_bytes += seg.size_bytes
        return seg

    def free(self, name: str) -> Segment:
        seg = self._segments.pop(name, None)
        if seg is None:
            raise EmuError(f"segment {name!r} is not allocated in {self.tier.value}")
        self._used_bytes -= seg.size_bytes
        return seg

    def get(self, name: str) -> Segment:
        try:
            return self._segments[name]
        except KeyError:
            raise EmuError(f"segment {name!r} is not allocated in {self.tier.value}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._segments

    def names(self) -> list[str]:
        return sorted(self._segments)

    def clear(self) -> None:
        self._segments.clear()
        self._used_bytes = 0


class MemoryTiers:
    """SRAM / HBM / DDR of one socket."""

    def __init__(self, sram_bytes: int, hbm_bytes: int, ddr_bytes: int) -> None:
        self.tiers = {
            Tier.SRAM: TierAllocator(Tier.SRAM, sram_bytes),
            Tier.HBM: TierAllocator(Tier.HBM, hbm_bytes),
            Tier.DDR: TierAllocator(Tier.DDR, ddr_bytes),
        }

    def __getitem__(self, tier: Tier) -> TierAllocator:
        try:
            return self.tiers[tier]
        except KeyError:
            raise EmuError(f"tier {tier.value} is not on the socket") from None

    def usage(self) -> dict[str, dict[str, int]]:
        return {t.value: {"used_bytes": a.used_bytes, "capacity_bytes": a.capacity_bytes}
                for t, a in self.tiers.items()}
