"""One sender's view of the fabric: FIFO state of every link, routing, injections.

Design decision: every socket keeps its *own* FIFO state for every link it
sends on or through. On a full mesh each direct link is used only by its
sender, so this is exact. On multi-hop routes (ring, torus, switch, or a mesh
routing around a dead link) two senders that share a transit link do not see
each other's traffic: transit contention between different senders is not
modelled, only a sender's contention with itself. The gain is that a send
needs no coordination between actors, so timing never depends on how Ray
schedules them.

Every injection (new link parameters, a link down or up) must be applied to
the view of every socket, with the same ``from_ns``, so that all sockets agree
on routes and ring orders.

Faults inside a step: a link can go down for data (physically) at any
nanosecond while routes still use it; frames on it are then lost (see
:mod:`sn40l_emu.fabric.link`) and recorded in :meth:`NetworkView.take_losses`.
Routes and rings move around it only when its routing state changes, which a
driver does at a step boundary -- the emulator's stand-in for a fabric manager
re-forming the rings after a failure (it charges no time for that: the
SN40L's failover time is not public). A frame with no route left is lost at
its ready time instead of raising, so every rank of a collective finishes it
and learns of the failure through the lost-arrival mark instead of hanging.

Scale-out (TP16): links between sockets of different nodes use
``P2PParams.scale_out`` (see :class:`sn40l_emu.fabric.topology.MultiNode`).
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.errors import LinkDownError
from sn40l_emu.fabric.link import LOST_NS, Link, fifo_rows, serialization_rows, serve_rows
from sn40l_emu.fabric.params import LinkParams, P2PParams
from sn40l_emu.fabric.topology import DirectedLink, Topology

_NO_DOWN: frozenset[DirectedLink] = frozenset()

#: Links busy after some time, as ``((src, dst), free_ns)`` sorted: the FIFO state a run can see
#: (``NetworkView.busy_after``), which cost reuse keys on and reapplies (``occupy``).
BusyLinks = tuple[tuple[DirectedLink, int], ...]


class _LazyLinks(dict[DirectedLink, Link]):
    """The FIFO state of every link of the wiring, made when first asked for (fresh = idle)."""

    def __init__(self, topology: Topology, params: P2PParams) -> None:
        super().__init__()
        self._topology = topology
        self._params = params
        self._scale_out = topology.scale_out_links

    def __missing__(self, key: DirectedLink) -> Link:
        a, b = key
        if not self._topology.has_link(a, b):
            raise KeyError(key)
        p = self._params.scale_out if key in self._scale_out else self._params.link
        link = self[key] = Link(a, b, p)
        return link


class NetworkView:
    """Link timing of the whole fabric as seen by socket ``owner`` when it sends."""

    def __init__(self, owner: int, topology: Topology, params: P2PParams) -> None:
        if not 0 <= owner < topology.n_sockets:
            raise ValueError(
                f"owner {owner} is not a socket of a {topology.n_sockets}-socket topology"
            )
        self.owner = owner
        self.topology = topology
        self.params = params
        # Links are made on first use: a 64-socket mesh has 4,032 of them per view and a
        # socket only ever sends on (or through) a few, so eager state was O(N^3) at set-up.
        self._links = _LazyLinks(topology, params)
        self._flappy: set[DirectedLink] = set()  # links with any down/up event
        # Routes depend only on the set of down links, so the cache never goes stale.
        self._route_cache: dict[tuple[int, frozenset[DirectedLink]], list[DirectedLink]] = {}
        self._losses: list[tuple[DirectedLink, int]] = []  # (link, loss_ns) of this sender's frames
        self._owner_dies = False  # a death of the owner is scheduled (sender_dies)

    def link(self, src: int, dst: int) -> Link:
        """The FIFO state of link ``src -> dst`` (KeyError names a link the wiring lacks)."""
        try:
            return self._links[(src, dst)]
        except KeyError:
            raise KeyError(f"the topology has no link {src}->{dst}") from None

    def busy_until_ns(self) -> int:
        """When the last link this socket sends on or through becomes free (0 if never used)."""
        return max((link.free_ns for link in self._links.values()), default=0)

    def down_links(self, at_ns: int) -> frozenset[DirectedLink]:
        """Links that are down at virtual time ``at_ns``."""
        return frozenset(k for k in self._flappy if self._links[k].is_down_at(at_ns))

    @property
    def timed_faults(self) -> bool:
        """Whether any link of this view has a down/up timeline or the owner's death is scheduled.

        Why: only frames are cut by a link going down or a sender dying (``Link.serve``); the
        batched in-process collectives move no frames, so a collective whose members see
        such a timeline takes the frame path (:mod:`sn40l_emu.collectives.api`), which gives
        the same nanoseconds when nothing fails.
        """
        return bool(self._flappy) or self._owner_dies

    def route(self, dst: int, at_ns: int) -> list[DirectedLink]:
        """Route from the owner to ``dst`` for a frame whose first chunk is ready at ``at_ns``."""
        if not self._flappy:  # no link ever changes state: the route of the intact wiring
            key = (dst, _NO_DOWN)
            cached = self._route_cache.get(key)
            if cached is not None:
                return cached
        down = self.down_links(at_ns)
        key = (dst, down)
        if key not in self._route_cache:
            self._route_cache[key] = self.topology.route(self.owner, dst, down)
        return self._route_cache[key]

    def transmit(self, dst: int, chunk_bytes: np.ndarray, ready_ns: np.ndarray) -> np.ndarray:
        """Send one frame's chunks to ``dst``; returns each chunk's arrival time there.

        The route is chosen once, from the links up when the first chunk is
        ready. Every hop is paid store-and-forward per chunk: a chunk's arrival
        at hop h is its readiness at hop h+1, so chunks pipeline across hops,
        and every link on the way is occupied. Raises LinkDownError when no
        route is left.
        """
        ready = np.asarray(ready_ns, dtype=np.int64).reshape(-1)
        sizes = np.asarray(chunk_bytes, dtype=np.int64).reshape(-1)
        if ready.shape != sizes.shape:
            raise ValueError(f"{sizes.size} chunk sizes for {ready.size} ready times")
        if ready.size == 0:
            return ready.copy()
        t0 = int(ready[0])
        if int(ready.max()) >= LOST_NS:  # carries lost data (a failed rank's ghost frame): occupies nothing
            return np.full(ready.shape, int(ready.max()), dtype=np.int64)
        try:
            hops = self.route(dst, t0)
        except LinkDownError:  # partitioned: the frame is lost where it starts
            self._losses.append(((self.owner, dst), t0))
            return np.full(ready.shape, LOST_NS + t0, dtype=np.int64)
        for hop in hops:
            link = self._links[hop]
            ready = link.serve(sizes, ready, self.params.chunk_overhead_ns)
            if link.last_loss_ns is not None:
                self._losses.append((hop, link.last_loss_ns))
                break
        return ready

    def busy_after(self, t_ns: int) -> BusyLinks:
        """The links of this view still busy after ``t_ns``: ``(link, free_ns)``, sorted.

        Why: a frame of this sender is never ready before its clock, so a link
        free by then cannot delay it; what is busy later is all the FIFO state
        that a run starting at ``t_ns`` can see (cost reuse keys on it,
        :mod:`sn40l_emu.engine.reuse`).
        """
        return tuple(sorted((k, link.free_ns) for k, link in self._links.items() if link.free_ns > t_ns))

    def occupy(self, busy: BusyLinks) -> None:
        """Links busy until at least the given times: a reused run's traffic, applied without frames."""
        for k, free_ns in busy:
            link = self._links[k]
            link.free_ns = max(link.free_ns, int(free_ns))

    def flush_after(self, at_ns: int) -> None:
        """Drop queued traffic after ``at_ns``: every link is free from then on at the latest."""
        for link in self._links.values():
            link.free_ns = min(link.free_ns, at_ns)

    def sender_dies(self, at_ns: int) -> None:
        """The owner dies at ``at_ns``: its frames not fully sent by then are lost."""
        self._owner_dies = True
        for (a, _), link in self._links.items():
            if a == self.owner:
                link.set_down(True, at_ns, routing=False)

    def take_losses(self) -> list[tuple[DirectedLink, int]]:
        """Frames of this sender lost since the last call: (link, loss_ns), in send order."""
        out, self._losses = self._losses, []
        return out

    def set_link(self, src: int, dst: int, params: LinkParams, from_ns: int) -> None:
        """Change ``src -> dst``'s bandwidth/latency for frames ready at or after ``from_ns``."""
        self.link(src, dst).set_params(params, from_ns)

    def link_down(self, src: int, dst: int, from_ns: int, *, physical: bool = True,
                  routing: bool = True) -> None:
        """Take link ``src -> dst`` down from ``from_ns``: for data, for routing, or both."""
        self.link(src, dst).set_down(True, from_ns, physical=physical, routing=routing)
        self._flappy.add((src, dst))

    def link_up(self, src: int, dst: int, from_ns: int, *, physical: bool = True,
                routing: bool = True) -> None:
        """Bring link ``src -> dst`` back from ``from_ns``: for data, for routing, or both."""
        self.link(src, dst).set_down(False, from_ns, physical=physical, routing=routing)
        self._flappy.add((src, dst))



class RowChannels:
    """Row ``i`` sends frames from ``views[i]`` to ``dsts[i]``, one frame per row per step.

    Why: a ring step of an N-socket collective is N frames on N different
    senders' views; serving them as one (N, K) array keeps the Python work per
    step O(N) at most and the numpy calls per step O(route length). When no link
    on any route ever changes (no down/up, no new parameters) the routes, link
    rates and busy-until times are taken once and kept in arrays for the whole
    batch; otherwise every step asks the views, exactly as ``transmit`` does.
    Same nanoseconds as row-by-row :meth:`NetworkView.transmit` (rows never share
    a view). Use as a context manager: the busy-until times go back to the links
    on exit.
    """

    def __init__(self, views: list[NetworkView], dsts: list[int]) -> None:
        if len(views) != len(dsts) or len({id(v) for v in views}) != len(views):
            raise ValueError("RowChannels needs one distinct view per row")
        self.views = views
        self.dsts = dsts
        self.overhead_ns = views[0].params.chunk_overhead_ns if views else 0
        self._hops: list[tuple[np.ndarray, list[Link], np.ndarray, np.ndarray, np.ndarray]] = []
        self._fixed = all(not v._flappy for v in views)
        if self._fixed:
            routes = [v.route(d, 0) for v, d in zip(views, dsts, strict=True)]
            for h in range(max((len(r) for r in routes), default=0)):
                rows = [i for i, r in enumerate(routes) if len(r) > h]
                links = [views[i].link(*routes[i][h]) for i in rows]
                if any(not link.fixed_params for link in links):
                    self._fixed = False
                    break
                ps = [link.params_at(0) for link in links]
                self._hops.append((
                    np.array(rows, dtype=np.int64), links,
                    np.array([p.bw_bytes_per_s for p in ps], dtype=np.int64),
                    np.array([p.latency_ns for p in ps], dtype=np.int64),
                    np.array([link.free_ns for link in links], dtype=np.int64),
                ))
        if not self._fixed:
            self._hops = []

    def __enter__(self) -> RowChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, links, _, _, free in self._hops:
            for link, f in zip(links, free.tolist(), strict=True):
                link.free_ns = f

    def send(self, chunk_bytes: np.ndarray, ready_ns: np.ndarray) -> np.ndarray:
        """One frame per row (``chunk_bytes[i]``, ``ready_ns[i]``); each chunk's arrival time."""
        if not self._fixed:
            return transmit_rows(self.views, self.dsts, chunk_bytes, ready_ns)
        cur = np.array(ready_ns, dtype=np.int64)
        sizes = np.asarray(chunk_bytes, dtype=np.int64)
        for rows, _, bw, latency, free in self._hops:
            whole = rows.size == cur.shape[0]
            r = cur if whole else cur[rows]
            done = fifo_rows(r, serialization_rows(sizes if whole else sizes[rows], bw,
                                                   self.overhead_ns), free)
            free[:] = done[:, -1]
            if whole:
                cur = done + latency[:, None]
            else:
                cur[rows] = done + latency[:, None]
        return cur


def transmit_rows(
    views: list[NetworkView], dsts: list[int], chunk_bytes: np.ndarray, ready_ns: np.ndarray
) -> np.ndarray:
    """``views[i].transmit(dsts[i], chunk_bytes[i], ready_ns[i])`` for every row ``i`` at once.

    Why: a ring step of an N-socket collective is N frames on N different
    senders' views; serving them as one (N, K) array keeps the Python work per
    step O(N) and the numpy calls per step O(route length), not O(N). Same
    nanoseconds as row-by-row ``transmit`` (rows never share a view).
    """
    ready = np.asarray(ready_ns, dtype=np.int64)
    if len(views) != ready.shape[0] or len({id(v) for v in views}) != len(views):
        raise ValueError("transmit_rows needs one distinct view per row")
    routes = [v.route(d, r) for v, d, r in zip(views, dsts, ready[:, 0].tolist(), strict=True)]
    overhead = views[0].params.chunk_overhead_ns if views else 0
    cur = ready.copy()
    for h in range(max((len(r) for r in routes), default=0)):
        rows = [i for i, r in enumerate(routes) if len(r) > h]
        links = [views[i].link(*routes[i][h]) for i in rows]
        cur[rows] = serve_rows(links, np.asarray(chunk_bytes)[rows], cur[rows], overhead)
    return cur
