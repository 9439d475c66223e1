"""Warm memory for large collective results: reused once every view of a result is gone.

Why: a 64 MiB ring all-reduce writes a fresh 64 MiB result per rank per call.
A fresh ``np.empty`` of that size is a new mapping from the allocator, so the
kernel zeroes and faults in every page on first touch and unmaps them all
when the previous result dies -- measured (``bench/allreduce_wall.py``) as a
large part of the system time of the actors. Here a result's memory is an
anonymous mapping that goes back to a per-size free list when the last array
viewing it dies (``weakref.finalize`` on the array whose base is the mapping;
numpy makes every further view keep that array alive), so the next call of
the same size writes into pages that are already resident.

A result is never handed to two owners: its memory is reused only after
nothing references it any more, so a caller's array cannot be overwritten by
a later call. Only the wall cost differs; values and nanoseconds do not.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
import weakref

import numpy as np

#: Results smaller than this come from ``np.empty`` (the allocator reuses small blocks well).
MIN_POOLED_BYTES = 4 * 1024 * 1024
#: Free memory one pool keeps for reuse; beyond it, freed mappings are dropped.
MAX_FREE_BYTES = 256 * 1024 * 1024


class ResultPool:
    """Flat arrays over reusable anonymous mappings, one free list per byte size."""

    def __init__(self, min_bytes: int = MIN_POOLED_BYTES, max_free_bytes: int = MAX_FREE_BYTES) -> None:
        self.min_bytes = min_bytes
        self.max_free_bytes = max_free_bytes
        self._free: dict[int, list[mmap.mmap]] = {}
        self._free_bytes = 0
        self._lock = threading.Lock()  # finalizers run in whichever thread drops the last view

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    def empty(self, count: int, dtype: np.dtype) -> np.ndarray:
        """An uninitialised flat array of ``count`` x ``dtype`` (warm pages when the pool has some)."""
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        if nbytes < self.min_bytes:
            return np.empty(count, dtype=dtype)
        with self._lock:
            spare = self._free.get(nbytes)
            mm = spare.pop() if spare else None
            if mm is not None:
                self._free_bytes -= nbytes
        if mm is None:
            mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            huge = getattr(mmap, "MADV_HUGEPAGE", None)  # as numpy asks for its large arrays
            if huge is not None:
                with contextlib.suppress(OSError):
                    mm.madvise(huge)
        region = np.frombuffer(mm, np.uint8, nbytes)  # its base is the mapping, not an array
        weakref.finalize(region, self._give_back, mm).atexit = False
        return region.view(dtype)

    def _give_back(self, mm: mmap.mmap) -> None:
        nbytes = len(mm)
        with self._lock:
            if self._free_bytes + nbytes <= self.max_free_bytes:
                self._free.setdefault(nbytes, []).append(mm)
                self._free_bytes += nbytes
        # else dropped: unmapped once the dying array lets go of it (closing it here would
        # fail, the array still exports its buffer while its finalizers run)


#: The process's pool (one per socket actor process; shared by the ranks of an in-process node).
POOL = ResultPool()
