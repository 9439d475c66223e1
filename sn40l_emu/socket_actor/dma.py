"""DMA engines: one FIFO server per socket and tier pair.

Two copies on one engine queue behind each other; copies on different engines
or different sockets overlap. An engine's bandwidth may change from a virtual
time onward (DDR throttling, a degraded host link): the rate in force when a
copy starts is the rate it gets.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum

from sn40l_emu.errors import EmuError
from sn40l_emu.program import Tier
from sn40l_emu.units import transfer_ns


class Engine(str, Enum):
    HOST_LINK = "host<->device"  # one PCIe link: host DRAM to DDR or HBM share it
    DDR_HBM = "ddr<->hbm"
    HBM_SRAM = "hbm<->sram"


_PAIRS: dict[frozenset[Tier], Engine] = {
    frozenset({Tier.HOST, Tier.DDR}): Engine.HOST_LINK,
    frozenset({Tier.HOST, Tier.HBM}): Engine.HOST_LINK,
    frozenset({Tier.DDR, Tier.HBM}): Engine.DDR_HBM,
    frozenset({Tier.HBM, Tier.SRAM}): Engine.HBM_SRAM,
}


def engine_for(src: Tier, dst: Tier) -> Engine:
    try:
        return _PAIRS[frozenset({src, dst})]
    except KeyError:
        raise EmuError(f"no DMA engine between {src.value} and {dst.value}") from None


@dataclass(frozen=True)
class CopyTiming:
    start_ns: int
    end_ns: int


class FifoEngine:
    """A FIFO server with a latency and a piecewise-constant bandwidth in virtual time."""

    def __init__(self, name: str, bw_bytes_per_s: int, latency_ns: int = 0) -> None:
        self.name = name
        self.latency_ns = int(latency_ns)
        self._change_ns: list[int] = [0]
        self._bw: list[int] = [int(bw_bytes_per_s)]
        self.free_ns = 0

    def bw_at(self, t_ns: int) -> int:
        i = bisect.bisect_right(self._change_ns, t_ns) - 1
        return self._bw[max(i, 0)]

    def set_bw(self, bw_bytes_per_s: int, from_ns: int) -> None:
        """The engine serves at ``bw_bytes_per_s`` for copies starting at or after ``from_ns``."""
        i = bisect.bisect_right(self._change_ns, from_ns)
        self._change_ns.insert(i, int(from_ns))
        self._bw.insert(i, int(bw_bytes_per_s))
        # a later change made earlier in program order is superseded by this one
        del self._change_ns[i + 1:]
        del self._bw[i + 1:]

    def serve(self, ready_ns: int, size_bytes: int) -> CopyTiming:
        start = max(int(ready_ns), self.free_ns)
        bw = self.bw_at(start)
        if bw <= 0:
            raise EmuError(f"DMA engine {self.name} has no bandwidth at t={start} ns")
        end = start + self.latency_ns + transfer_ns(size_bytes, bw)
        self.free_ns = end
        return CopyTiming(start, end)


class DmaEngines:
    """The engines of one socket, each a :class:`FifoEngine`."""

    def __init__(self, rates_bytes_per_s: dict[Engine, int], host_latency_ns: int = 0) -> None:
        self.engines = {
            kind: FifoEngine(kind.value, bw, host_latency_ns if kind is Engine.HOST_LINK else 0)
            for kind, bw in rates_bytes_per_s.items() if bw > 0
        }

    def get(self, kind: Engine) -> FifoEngine:
        try:
            return self.engines[kind]
        except KeyError:
            raise EmuError(f"this socket has no {kind.value} DMA engine") from None

    def copy(self, src: Tier, dst: Tier, size_bytes: int, ready_ns: int) -> CopyTiming:
        return self.get(engine_for(src, dst)).serve(ready_ns, size_bytes)

    def busy_until_ns(self) -> int:
        return max((e.free_ns for e in self.engines.values()), default=0)
