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
from sn40l_emu.fabric.link import LOST_NS, Link
from sn40l_emu.fabric.params import LinkParams, P2PParams
from sn40l_emu.fabric.topology import DirectedLink, Topology


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
        scale_out = topology.scale_out_links
        self._links: dict[DirectedLink, Link] = {
            (a, b): Link(a, b, params.scale_out if (a, b) in scale_out else params.link)
            for a, b in topology.links
        }
        self._flappy: set[DirectedLink] = set()  # links with any down/up event
        # Routes depend only on the set of down links, so the cache never goes stale.
        self._route_cache: dict[tuple[int, frozenset[DirectedLink]], list[DirectedLink]] = {}
        self._losses: list[tuple[DirectedLink, int]] = []  # (link, loss_ns) of this sender's frames

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

    def route(self, dst: int, at_ns: int) -> list[DirectedLink]:
        """Route from the owner to ``dst`` for a frame whose first chunk is ready at ``at_ns``."""
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

    def flush_after(self, at_ns: int) -> None:
        """Drop queued traffic after ``at_ns``: every link is free from then on at the latest."""
        for link in self._links.values():
            link.free_ns = min(link.free_ns, at_ns)

    def sender_dies(self, at_ns: int) -> None:
        """The owner dies at ``at_ns``: its frames not fully sent by then are lost."""
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
