"""A socket's virtual clock: an integer number of nanoseconds that only moves forward."""

from __future__ import annotations


class VirtualClock:
    """Monotonic virtual time. Wall-clock time never enters it."""

    def __init__(self, now_ns: int = 0) -> None:
        self._now_ns = int(now_ns)

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def advance_to(self, t_ns: int) -> int:
        """Move to ``max(now, t_ns)`` (a receive, a wait); returns the new time."""
        self._now_ns = max(self._now_ns, int(t_ns))
        return self._now_ns

    def advance_by(self, dur_ns: int) -> int:
        if dur_ns < 0:
            raise ValueError(f"negative duration {dur_ns} ns")
        self._now_ns += int(dur_ns)
        return self._now_ns
