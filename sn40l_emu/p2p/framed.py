"""What both transports share: per-(peer, tag) sequence numbers, link timing, framing.

A send asks the sender's :class:`NetworkView` when each chunk arrives (the
transport never computes a delay itself), packs a frame with that arrival
vector, and hands it to the concrete transport's ``_deliver``. A receive
takes the next sequence number for (src, tag) and waits for exactly that
frame, so matching never depends on arrival order.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import lru_cache

import numpy as np

from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.p2p.frame import Frame, encode_frame
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.p2p.rendezvous import Rendezvous
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport, chunk_bounds
from sn40l_emu.program import np_dtype
from sn40l_emu.trace import TraceRecorder


@lru_cache(maxsize=4096)
def cached_chunk_bounds(count: int, chunks: int) -> np.ndarray:
    """``chunk_bounds`` memoised (read-only result): collectives ask for the same cuts often."""
    bounds = chunk_bounds(count, chunks)
    bounds.flags.writeable = False
    return bounds


def chunk_bytes(payload: Tensor, chunks: int) -> np.ndarray:
    """Bytes of each of ``chunks`` pieces of ``payload`` (np.array_split rule on elements)."""
    if isinstance(payload, SymbolicTensor):
        itemsize = np_dtype(payload.dtype).itemsize
    else:
        itemsize = payload.dtype.itemsize
    return np.diff(cached_chunk_bounds(int(payload.size), chunks)) * np.int64(itemsize)


class FramedTransport(Transport):
    """Transport over frames and a mailbox; subclasses say how a frame reaches its peer."""

    def __init__(
        self,
        rank: int,
        network: NetworkView,
        mailbox: Mailbox,
        max_frame_bytes: int,
        timeout_s: float,
    ) -> None:
        if network.owner != rank or mailbox.rank != rank:
            raise ValueError(
                f"rank {rank}: network view of {network.owner}, mailbox of {mailbox.rank}"
            )
        self.rank = rank
        self.network = network
        self.topology = network.topology
        self.mailbox = mailbox
        self.max_frame_bytes = max_frame_bytes
        self.timeout_s = timeout_s
        self._send_seq: dict[tuple[int, int], int] = {}
        self._recv_seq: dict[tuple[int, int], int] = {}
        # the socket's TraceRecorder while a traced program runs: each message's send and arrival
        # become zero-length marks on the "p2p" track, paired into a flow by (src, dst, tag, seq)
        self.trace: TraceRecorder | None = None
        self._coll_seq: dict[tuple[tuple[int, ...], int], int] = {}
        #: shared by every member of an in-process group (None: frames only, e.g. Ray)
        self.rendezvous: Rendezvous | None = None

    def collective_key(self, group: tuple[int, ...], wire_tag: int) -> tuple[object, ...]:
        """What the members of one collective call agree on: group, wire tag and how many
        collectives this rank already ran with both (program order, like frame sequences)."""
        seq = self._coll_seq.get((group, wire_tag), 0)
        self._coll_seq[(group, wire_tag)] = seq + 1
        return (group, wire_tag, seq)

    @staticmethod
    def _next(counters: dict[tuple[int, int], int], key: tuple[int, int]) -> int:
        seq = counters.get(key, 0)
        counters[key] = seq + 1
        return seq

    async def send(self, dst: int, tag: int, payload: Tensor, ready_ns: np.ndarray) -> None:
        ready = np.asarray(ready_ns, dtype=np.int64).reshape(-1)
        if ready.size < 1:
            raise ValueError("a frame needs at least one chunk ready time")
        if dst == self.rank:
            raise ValueError(f"socket {self.rank} cannot send to itself")
        sizes = chunk_bytes(payload, int(ready.size))
        arrive = self.network.transmit(dst, sizes, ready)
        seq = self._next(self._send_seq, (dst, tag))
        header, flat = encode_frame(self.rank, dst, tag, seq, payload, arrive)
        if self.trace is not None:
            self.trace.record(int(ready[0]), 0, "p2p", f"send to {dst}", size_bytes=int(sizes.sum()),
                              chunks=int(ready.size), arrive_ns=int(arrive[-1]),
                              flow_out=f"{self.rank}>{dst}:{tag}:{seq}")
        await self._deliver(dst, header, flat)

    async def recv(self, src: int, tag: int) -> tuple[Tensor, np.ndarray]:
        seq = self._next(self._recv_seq, (src, tag))
        frame = await self._fetch(src, tag, seq)
        if self.trace is not None:
            self.trace.record(int(frame.arrive_ns[-1]), 0, "p2p", f"arrival from {src}",
                              flow_in=f"{src}>{self.rank}:{tag}:{seq}")
        return frame.tensor(), frame.arrive_ns

    async def _fetch(self, src: int, tag: int, seq: int) -> Frame:
        return await self.mailbox.get(src, tag, seq, self.timeout_s)

    def restart(self, network: NetworkView) -> bool:
        """A power-cycle of the whole node, in place: idle links (``network``, a fresh view) and
        sequences from 0, the connections kept. True when done.

        Why: reconnecting to every peer was most of what a power-cycle cost a socket actor,
        and a sweep power-cycles the node before every row. Only safe when every socket
        restarts before any of them sends again (the node's power-cycle) and nothing is in
        flight; a transport that cannot tell it is quiet (:meth:`quiet`) changes nothing and
        answers False, and the caller rewires instead.
        """
        if not self.quiet() or network.owner != self.rank:
            return False
        self.network = network
        self.topology = network.topology
        self._send_seq.clear()
        self._recv_seq.clear()
        self._coll_seq.clear()
        return True

    def quiet(self) -> bool:
        """Nothing in flight here: no frame waits in the mailbox, no receive waits, no meeting."""
        return self.mailbox.idle and self.rendezvous is None

    def drop_in_flight(self, detail: str, now_ns: int) -> int:
        """Drop the mailbox's undelivered frames, open meetings and the links' time booked
        after ``now_ns`` (virtual time of frames that will never be received); sequences
        restart at 0.

        Every member of the group must do this together (the node's recovery does),
        and a recreated socket starts at 0 too, so all agree on the numbering again.
        """
        dropped = self.mailbox.drop_all(detail)
        self.network.flush_after(now_ns)
        if self.rendezvous is not None:
            self.rendezvous.clear(detail)
        self._send_seq.clear()
        self._recv_seq.clear()
        self._coll_seq.clear()
        return dropped

    @abstractmethod
    async def _deliver(self, dst: int, header: bytes, payload: np.ndarray | None) -> None:
        """Hand an encoded frame to socket ``dst``'s mailbox."""
