"""When each element of a collective's buffer is ready on this rank, piecewise constant.

Why: a pipelined collective forwards chunk k as soon as chunk k arrived
(docs/architecture.md "Virtual time"), and different algorithms cut the same buffer into
different pieces (a ring segment, a halving step's half, a broadcast frame).
Keeping readiness per element range lets any algorithm ask "when is every
element of this chunk here?" and record "these chunks arrived then" without
an array per element: pieces stay O(ranks x chunks), all operations are
vectorised.
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.p2p.framed import cached_chunk_bounds


class ReadyMap:
    """Ready time (ns) of every element of ``[0, size)``, as sorted pieces."""

    def __init__(self, size: int, ready_ns: int) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        self._bounds = np.array([0, size], dtype=np.int64)  # piece p = [bounds[p], bounds[p+1])
        self._times = np.array([ready_ns], dtype=np.int64)

    @property
    def pieces(self) -> int:
        return int(self._times.size)

    def _point(self, pos: np.ndarray) -> np.ndarray:
        """Ready time of the pieces holding the elements at ``pos`` (clamped into range)."""
        idx = np.searchsorted(self._bounds, pos, side="right") - 1
        return self._times[np.minimum(np.maximum(idx, 0), self._times.size - 1)]

    def _chunks(self, lo: int, hi: int, chunks: int) -> np.ndarray:
        if not 0 <= lo <= hi <= self.size:
            raise ValueError(f"range [{lo}, {hi}) outside [0, {self.size})")
        return lo + cached_chunk_bounds(hi - lo, chunks)

    def chunk_ready(self, lo: int, hi: int, chunks: int) -> np.ndarray:
        """When all of each of ``chunks`` pieces of ``[lo, hi)`` (np.array_split rule) is ready.

        An empty chunk takes the ready time at its position.
        """
        cb = self._chunks(lo, hi, chunks)
        first = np.searchsorted(self._bounds, cb[:-1], side="right") - 1
        last = np.searchsorted(self._bounds, cb[1:], side="left") - 1  # exclusive end of the chunk
        empty = cb[1:] <= cb[:-1]
        if self.size == 0 or bool(np.all(empty)):
            return self._point(cb[:-1])
        # max(times[first_k .. last_k]) for all k at once: reduceat over interleaved
        # (start, stop) pairs; the even results are the wanted ranges.
        first = np.minimum(np.maximum(first, 0), self._times.size - 1)
        stop = np.maximum(last + 1, first + 1)
        idx = np.empty(2 * first.size, dtype=np.int64)
        idx[0::2] = first
        idx[1::2] = stop
        padded = np.append(self._times, np.int64(0))
        out = np.maximum.reduceat(padded, idx)[0::2]
        return np.where(empty, self._point(cb[:-1]), out)

    def update(self, lo: int, hi: int, chunks: int, arrive_ns: np.ndarray) -> None:
        """Chunk k of ``[lo, hi)`` is ready no earlier than ``arrive_ns[k]`` (the max is kept)."""
        cb = self._chunks(lo, hi, chunks)
        arrive = np.asarray(arrive_ns, dtype=np.int64).reshape(-1)
        if arrive.size != chunks:
            raise ValueError(f"{arrive.size} arrival times for {chunks} chunks")
        if self.size == 0:
            self._times[0] = max(int(self._times[0]), int(arrive.max(initial=self._times[0])))
            return
        starts = np.union1d(self._bounds[:-1], cb)  # cb[-1] = hi also cuts a piece
        starts = starts[starts < self.size]
        times = self._point(starts)
        inside = (starts >= lo) & (starts < hi)
        k = np.searchsorted(cb, starts[inside], side="right") - 1
        times[inside] = np.maximum(times[inside], arrive[np.minimum(np.maximum(k, 0), chunks - 1)])
        keep = np.ones(times.size, dtype=bool)
        keep[1:] = times[1:] != times[:-1]
        self._bounds = np.append(starts[keep], np.int64(self.size))
        self._times = times[keep]

    def max_over(self, lo: int, hi: int) -> int:
        """When every element of ``[lo, hi)`` is ready (the point value for an empty range)."""
        return int(self.chunk_ready(lo, hi, 1)[0])
