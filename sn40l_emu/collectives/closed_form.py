"""Closed-form times of the collective algorithms, for the selector and for tests.

Notation: N ranks, K chunks per frame (per segment for the ring), chunk bytes
c, per-chunk link time ``T = transfer_ns(c, bw) + chunk_overhead_ns``, link
latency L. A route of h store-and-forward hops delivers a chunk
``lat(h) = h*L + (h-1)*T`` after it leaves the first link (every later hop
adds its latency and a serialization); the chunks of one frame follow each
other at T, so later hops never queue.

**Ring (reduce-scatter / all-gather / all-reduce), s steps.** Let D[s][k] be
when link p -> p+1 finishes chunk k of step s (all ranks start together, so
every rank is symmetric and the predecessor's D is the same). Chunk k of
step s may leave when chunk k of step s-1 has arrived (D[s-1][k] + lat) and
the link is free (D[s][k-1], or D[s-1][K-1] for k = 0):

    D[s][k] = max(D[s-1][k] + lat, D[s][k-1]) + T,     D[0][k] = (k+1) T.

Claim: D[s][k] = s X + (k+1) T with X = max(lat + T, K T). For k = 0:
max((s-1)X + T + lat, (s-1)X + K T) + T = (s-1)X + X + T. For k >= 1 the
first term (s-1)X + (k+1)T + lat is <= sX + kT because lat + T <= X, so
D[s][k] = sX + kT + T. The last chunk of the last step arrives at
D[s-1][K-1] + lat:

    ring(s) = (s - 1) * max(lat + T, K*T) + K*T + lat

with s = 2(N-1) and c = S/(N K) for an all-reduce of S bytes -- for h = 1 the
lead's ``(2(N-1) - 1) * max(L + T, K T) + K T + L`` -- and s = N-1 for a
reduce-scatter (S the input) or all-gather (S the gathered result).

**Chain** (a frame's K chunks over h hops, or a pipelined chain of ranks
where every link carries one frame): ``chain(h, K) = K T + (h-1) T + h L``.
One-shot sends N-1 frames; where m of them share a sender's busiest link
(m = 1 on a full mesh, N-1 on a switch uplink) that link serialises m K
chunks: ``chain(h, m K)``. The ring broadcast is a chain of N-1 links; the
binomial broadcast a chain of its depth.

**Tree** (Rabenseifner, N a power of two): log2 N halving steps of S/2,
S/4, ..., S/N bytes, then the doubling steps back up. With K = 1 each step
waits for the whole previous one, so the time is exactly
``2 * sum_d chain(h_d, 1)`` with c = S d / N; with K > 1 the same sum (per
step ``chain(h_d, K)``) is an upper bound, since pipelining across steps is
not credited. Other N fall back to the ring, and so does the formula.

All of these are exact on an idle full mesh with all ranks starting at the
same time and sizes that divide evenly (tested to the nanosecond); on other
topologies they use the worst route of the pattern and ignore transit
contention, like the network model itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.units import ceil_div, transfer_ns


@dataclass(frozen=True)
class RouteCost:
    """The worst route of a communication pattern: hops, slowest link, largest latency, load.

    ``load`` is how many frames of one sender share its busiest link in the pattern.
    """

    hops: int
    bw_bytes_per_s: int
    latency_ns: int
    load: int = 1

    @staticmethod
    def direct(link: LinkParams) -> RouteCost:
        return RouteCost(1, link.bw_bytes_per_s, link.latency_ns, 1)


def chunk_ns(chunk_bytes: int, route: RouteCost, chunk_overhead_ns: int) -> int:
    """T: how long one chunk occupies a link."""
    return transfer_ns(chunk_bytes, route.bw_bytes_per_s) + chunk_overhead_ns


def path_latency_ns(route: RouteCost, t_chunk_ns: int) -> int:
    """lat(h) = h L + (h-1) T: from leaving the first link to arriving at the far end."""
    return route.hops * route.latency_ns + (route.hops - 1) * t_chunk_ns


def ring_steps_ns(steps: int, chunks: int, t_chunk_ns: int, lat_ns: int) -> int:
    """(s-1) max(lat + T, K T) + K T + lat; 0 for no steps."""
    if steps <= 0:
        return 0
    return (
        (steps - 1) * max(lat_ns + t_chunk_ns, chunks * t_chunk_ns) + chunks * t_chunk_ns + lat_ns
    )


def chain_ns(hops: int, chunks: int, t_chunk_ns: int, latency_ns: int) -> int:
    """K T + (h-1) T + h L: ``chunks`` chunks through ``hops`` links in a pipeline."""
    if hops <= 0:
        return 0
    return chunks * t_chunk_ns + (hops - 1) * t_chunk_ns + hops * latency_ns


def ring_ns(
    steps: int, n: int, size_bytes: int, chunks: int, route: RouteCost, overhead_ns: int
) -> int:
    """A ring of ``steps`` steps moving one of ``n`` segments of ``size_bytes`` per step."""
    t = chunk_ns(ceil_div(size_bytes, n * chunks), route, overhead_ns)
    return ring_steps_ns(steps, chunks, t, path_latency_ns(route, t))


def ring_all_reduce_ns(
    n: int, size_bytes: int, chunks: int, route: RouteCost, overhead_ns: int
) -> int:
    """(2(N-1) - 1) max(lat + T, K T) + K T + lat, c = S / (N K)."""
    return ring_ns(2 * (n - 1), n, size_bytes, chunks, route, overhead_ns)


def direct_ns(frame_bytes: int, chunks: int, route: RouteCost, overhead_ns: int) -> int:
    """One frame per peer, ``route.load`` of them on the sender's busiest link: chain(h, m K)."""
    t = chunk_ns(ceil_div(frame_bytes, chunks), route, overhead_ns)
    return chain_ns(route.hops, route.load * chunks, t, route.latency_ns)


def chain_frame_ns(
    hops: int, frame_bytes: int, chunks: int, route: RouteCost, overhead_ns: int
) -> int:
    """A frame forwarded chunk by chunk along ``hops`` links, each used once."""
    t = chunk_ns(ceil_div(frame_bytes, chunks), route, overhead_ns)
    return chain_ns(hops, chunks, t, route.latency_ns)


def halving_ns(
    n: int, size_bytes: int, chunks: int, routes: dict[int, RouteCost], overhead_ns: int
) -> int:
    """sum over d = N/2 .. 1 of chain(h_d, K) with frames of S d / N bytes (one direction)."""
    total = 0
    d = n // 2
    while d >= 1:
        route = routes[d]
        total += chain_frame_ns(route.hops, ceil_div(size_bytes * d, n), chunks, route, overhead_ns)
        d //= 2
    return total
