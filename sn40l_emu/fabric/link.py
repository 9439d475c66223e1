"""One directed link as a FIFO server (docs/architecture.md "Contention").

A frame of K chunks is offered to the link with a ready time per chunk; the
link serves chunks in order, one at a time, each for its serialization time

    serialization_ns = transfer_ns(chunk_bytes, bw_bytes_per_s) + chunk_overhead_ns

(the fixed per-chunk sender cost -- descriptor, header -- occupies the link
too), and chunk i reaches the far end ``latency_ns`` after it is done.
The cost lives here (SimPy's ``Cable`` owns the delay, not the sender).

Injected changes are timed: new parameters apply from a virtual time onward,
to frames whose *first chunk is ready at this link* at or after that time; a
frame is never split between two parameter sets, so arrival times within a
frame stay non-decreasing.

A link has two down/up timelines. The *physical* one says when it carries
data: a frame that is on the link (handed to it, not yet fully served) when
the link goes down at ``T``, or that is handed to a link already down, is
lost at ``T`` -- every chunk of it, the frame is atomic -- however late it
was handed to the link, so every loss that one failure causes carries the same
nanosecond. The *routing* one says when senders route around it (routes and ring
orders are chosen from it); a driver moves it at a step boundary, so every
member of a collective agrees on the ring (see :mod:`sn40l_emu.fabric.network`).

A lost chunk arrives at ``LOST_NS + loss_ns``. Collectives combine arrival
times with ``max`` only, so the mark travels unchanged to every rank whose
result depends on the lost frame, which then knows the collective failed and
at which nanosecond; a frame with any chunk already marked is lost as a whole
and passes a link without occupying it (a "ghost" frame of a failed rank).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.units import transfer_ns

#: Arrival times at or above this mark a lost frame: ``LOST_NS + loss_ns``.
#: 2**61 ns is 73 years of virtual time, far beyond any run, and leaves int64 headroom.
LOST_NS = 1 << 61


def is_lost(t_ns: int) -> bool:
    return t_ns >= LOST_NS


def lost_at(t_ns: int) -> int:
    """The loss time carried by a lost arrival time (``t_ns`` must be >= LOST_NS)."""
    return t_ns - LOST_NS


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
        self._down_times: list[int] = [0]  # physical: does it carry data
        self._down: list[bool] = [False]
        self._route_times: list[int] = [0]  # routing: do senders avoid it
        self._route_down: list[bool] = [False]
        self.last_loss_ns: int | None = None  # set by serve() when it lost the frame

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

    def set_down(self, down: bool, from_ns: int, *, physical: bool = True, routing: bool = True) -> None:
        """Mark the link down (or up again) from ``from_ns`` onward: for data, for routing, or both."""
        if physical:
            self._insert(self._down_times, self._down, from_ns, down)
        if routing:
            self._insert(self._route_times, self._route_down, from_ns, down)

    @property
    def fixed_params(self) -> bool:
        """True while no timed change (new parameters, down, up) was ever applied."""
        return len(self._param_times) == 1 and len(self._down_times) == 1

    def params_at(self, at_ns: int) -> LinkParams:
        return self._params[bisect_right(self._param_times, at_ns) - 1]

    def is_down_at(self, at_ns: int) -> bool:
        """Whether routes avoid the link at ``at_ns`` (the routing timeline)."""
        return self._route_down[bisect_right(self._route_times, at_ns) - 1]

    def carries_at(self, at_ns: int) -> bool:
        """Whether the link carries data at ``at_ns`` (the physical timeline)."""
        return not self._down[bisect_right(self._down_times, at_ns) - 1]

    def first_down_in(self, lo_ns: int, hi_ns: int) -> int | None:
        """When the link went down, if it is down at ``lo_ns`` or goes down before ``hi_ns``; else None.

        Down already at ``lo_ns``: the time it went down, so every frame a failure
        loses carries the same instant, however late it was handed to the link.
        """
        i = bisect_right(self._down_times, lo_ns)
        if self._down[i - 1]:
            return self._down_times[i - 1]
        for t, down in zip(self._down_times[i:], self._down[i:], strict=True):
            if t >= hi_ns:
                return None
            if down:
                return t
        return None

    def serve(
        self, chunk_bytes: np.ndarray, ready_ns: np.ndarray, chunk_overhead_ns: int
    ) -> np.ndarray:
        """Occupy the link with one frame's chunks; returns their arrival times at the far end.

        A lost frame (see the module docstring) returns ``LOST_NS + loss_ns`` for
        every chunk, sets :attr:`last_loss_ns`, and occupies the link until the loss.
        """
        self.last_loss_ns = None
        ready = np.asarray(ready_ns, dtype=np.int64)
        if ready.size == 0:
            return ready.copy()
        if int(ready.max()) >= LOST_NS:  # data already lost upstream: the whole frame is (atomic)
            return np.full(ready.shape, int(ready.max()), dtype=np.int64)
        params = self.params_at(int(ready[0]))
        ser = serialization_ns(chunk_bytes, params.bw_bytes_per_s, chunk_overhead_ns)
        _, done, free = fifo_serve(ready, ser, self.free_ns)
        cut = self.first_down_in(int(ready[0]), int(done[-1]))
        if cut is not None:
            self.last_loss_ns = cut
            self.free_ns = max(self.free_ns, cut)
            return np.full(ready.shape, LOST_NS + cut, dtype=np.int64)
        self.free_ns = free
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

    Lost frames (a link going down, a dying sender) are not modelled here: the
    batched collectives that use this never run while a view has a down/up
    timeline or a scheduled death (``NetworkView.timed_faults``; see
    :mod:`sn40l_emu.collectives.api`), so such a collective takes the frame path.
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
