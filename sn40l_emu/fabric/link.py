"""One directed link as a FIFO server (docs/architecture.md "Contention").

A frame of K chunks is offered to the link with a ready time per chunk; the
link serves chunks in order, one at a time, each for its serialization time

    serialization_ns = transfer_ns(chunk_bytes, bw_bytes_per_s) + chunk_overhead_ns

(the fixed per-chunk sender cost -- descriptor, header -- occupies the link
too), and chunk i reaches the far end ``latency_ns`` after it is done.
The cost lives here (SimPy's ``Cable`` owns the delay, not the sender).

Injected changes are timed: new parameters, ``down`` and ``up`` apply from a
virtual time onward, to frames whose *first chunk is ready at this link* at or
after that time; a frame is never split between two parameter sets, so arrival
times within a frame stay non-decreasing. A frame already handed to the link
before it goes down completes (in-flight data is not lost in this model).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.units import transfer_ns


def fifo_serve(
    ready_ns: np.ndarray, ser_ns: np.ndarray, free_ns: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Serve chunks in order on one FIFO server; returns (start_ns, done_ns, new_free_ns).

    The recurrence ``done_i = max(ready_i, done_{i-1}) + ser_i`` with
    ``done_{-1} = free_ns`` unrolls, with ``S_i = ser_0 + ... + ser_i`` and
    ``S_{-1} = 0``, to

        done_i = S_i + max(free_ns, max_{j <= i} (ready_j - S_{j-1}))

    which is a cumulative sum and a running maximum: vectorised, no Python
    loop over chunks, exact in int64.
    """
    ready = np.asarray(ready_ns, dtype=np.int64)
    ser = np.asarray(ser_ns, dtype=np.int64)
    if ready.shape != ser.shape or ready.ndim != 1:
        raise ValueError(f"ready_ns {ready.shape} and ser_ns {ser.shape} must be equal 1-D")
    if ready.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), int(free_ns)
    cum = np.cumsum(ser)
    cum_before = cum - ser
    slack = np.maximum.accumulate(ready - cum_before)
    done = cum + np.maximum(slack, np.int64(free_ns))
    start = done - ser
    return start, done, int(done[-1])


def serialization_ns(
    chunk_bytes: np.ndarray, bw_bytes_per_s: int, chunk_overhead_ns: int
) -> np.ndarray:
    """Time each chunk occupies a link: exact integer ceiling per chunk plus the overhead.

    ``units.transfer_ns`` is evaluated with Python ints on the distinct sizes
    only (a frame has at most two, by the np.array_split rule), which keeps it
    exact where ``bytes * 1e9`` would overflow int64.
    """
    sizes = np.asarray(chunk_bytes, dtype=np.int64)
    if sizes.size:
        small, big = int(sizes.min()), int(sizes.max())
        if bool(np.all((sizes == small) | (sizes == big))):  # the common case
            t_small = transfer_ns(small, bw_bytes_per_s) + chunk_overhead_ns
            t_big = transfer_ns(big, bw_bytes_per_s) + chunk_overhead_ns
            return np.where(sizes == big, np.int64(t_big), np.int64(t_small))
    distinct, inverse = np.unique(sizes, return_inverse=True)
    per = np.array(
        [transfer_ns(int(b), bw_bytes_per_s) + chunk_overhead_ns for b in distinct],
        dtype=np.int64,
    )
    return per[inverse.reshape(sizes.shape)]


class Link:
    """State of one directed link as seen by one sender: busy-until time and timed changes.

    Mutable on purpose (it is the FIFO state); the cost formulas above are pure.
    """

    def __init__(self, src: int, dst: int, params: LinkParams) -> None:
        self.src = src
        self.dst = dst
        self.free_ns = 0
        self._param_times: list[int] = [0]
        self._params: list[LinkParams] = [params]
        self._down_times: list[int] = [0]
        self._down: list[bool] = [False]

    def __repr__(self) -> str:
        return f"Link({self.src}->{self.dst}, free_ns={self.free_ns})"

    @staticmethod
    def _insert(times: list[int], values: list, at_ns: int, value: object) -> None:
        # Events at the same time: the one applied last wins (bisect_right keeps call order).
        i = bisect_right(times, at_ns)
        times.insert(i, at_ns)
        values.insert(i, value)

    def set_params(self, params: LinkParams, from_ns: int) -> None:
        """New bandwidth/latency for frames whose first chunk is ready here at/after ``from_ns``."""
        if params.bw_bytes_per_s <= 0 or params.latency_ns < 0:
            raise ValueError(f"invalid link parameters {params}")
        self._insert(self._param_times, self._params, from_ns, params)

    def set_down(self, down: bool, from_ns: int) -> None:
        """Mark the link down (or up again) from ``from_ns`` onward."""
        self._insert(self._down_times, self._down, from_ns, down)

    @property
    def fixed_params(self) -> bool:
        """True while no timed change (new parameters, down, up) was ever applied."""
        return len(self._param_times) == 1 and len(self._down_times) == 1

    def params_at(self, at_ns: int) -> LinkParams:
        return self._params[bisect_right(self._param_times, at_ns) - 1]

    def is_down_at(self, at_ns: int) -> bool:
        return self._down[bisect_right(self._down_times, at_ns) - 1]

    def serve(
        self, chunk_bytes: np.ndarray, ready_ns: np.ndarray, chunk_overhead_ns: int
    ) -> np.ndarray:
        """Occupy the link with one frame's chunks; returns their arrival times at the far end."""
        ready = np.asarray(ready_ns, dtype=np.int64)
        if ready.size == 0:
            return ready.copy()
        params = self.params_at(int(ready[0]))
        ser = serialization_ns(chunk_bytes, params.bw_bytes_per_s, chunk_overhead_ns)
        _, done, self.free_ns = fifo_serve(ready, ser, self.free_ns)
        return done + np.int64(params.latency_ns)



def fifo_rows(ready_ns: np.ndarray, ser_ns: np.ndarray, free_ns: np.ndarray) -> np.ndarray:
    """:func:`fifo_serve` of every row on its own server (busy until ``free_ns[row]``): done times."""
    cum = np.cumsum(ser_ns, axis=1)
    slack = np.maximum.accumulate(ready_ns - (cum - ser_ns), axis=1)
    return cum + np.maximum(slack, free_ns[:, None])


def serialization_rows(
    chunk_bytes: np.ndarray, bw_bytes_per_s: np.ndarray, chunk_overhead_ns: int
) -> np.ndarray:
    """:func:`serialization_ns` of row ``i`` at ``bw_bytes_per_s[i]``; exact, one
    ``transfer_ns`` per distinct (bytes, rate) pair."""
    sizes = np.asarray(chunk_bytes, dtype=np.int64)
    bws = np.asarray(bw_bytes_per_s, dtype=np.int64)
    if bws.size and bool(np.all(bws == bws[0])):
        return serialization_ns(sizes, int(bws[0]), chunk_overhead_ns)
    out = np.empty_like(sizes)
    for bw in np.unique(bws).tolist():
        rows = bws == bw
        out[rows] = serialization_ns(sizes[rows], int(bw), chunk_overhead_ns)
    return out


def serve_rows(
    links: list[Link], chunk_bytes: np.ndarray, ready_ns: np.ndarray, chunk_overhead_ns: int
) -> np.ndarray:
    """``links[i].serve(chunk_bytes[i], ready_ns[i], ...)`` for every row at once (distinct links).

    The row-wise form of :func:`fifo_serve` (cumulative sums and running maxima
    along axis 1), so N frames on N links cost a few numpy calls; same
    nanoseconds as calling :meth:`Link.serve` per row. Keep the two in step.
    """
    ready = np.asarray(ready_ns, dtype=np.int64)
    sizes = np.asarray(chunk_bytes, dtype=np.int64)
    if ready.shape != sizes.shape or ready.ndim != 2 or ready.shape[0] != len(links):
        raise ValueError(f"ready_ns {ready.shape} and chunk_bytes {sizes.shape} for {len(links)} links")
    if ready.shape[1] == 0:
        return ready.copy()
    params = [link.params_at(t) for link, t in zip(links, ready[:, 0].tolist(), strict=True)]
    bws = np.array([p.bw_bytes_per_s for p in params], dtype=np.int64)
    ser = serialization_rows(sizes, bws, chunk_overhead_ns)
    free = np.array([link.free_ns for link in links], dtype=np.int64)
    done = fifo_rows(ready, ser, free)
    for link, f in zip(links, done[:, -1].tolist(), strict=True):
        link.free_ns = f
    latency = np.array([p.latency_ns for p in params], dtype=np.int64)
    return done + latency[:, None]
