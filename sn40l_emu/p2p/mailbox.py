"""A socket's mailbox: frames matched by (source, tag, sequence), never by arrival order.

Either side may come first: a frame put before anyone asks waits in the
box; a receiver that asks first waits on a future that ``put`` completes.
The only wall clock in the P2P layer is the receive timeout, which declares a
silent peer dead (:class:`P2PTimeoutError`); it never enters virtual time.
"""

from __future__ import annotations

import asyncio

from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.p2p.frame import Frame

MailKey = tuple[int, int, int]  # (src, tag, seq)


class Mailbox:
    """Frames addressed to socket ``rank``, waiting to be received. One event loop only."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._ready: dict[MailKey, Frame] = {}
        self._waiters: dict[MailKey, asyncio.Future[Frame]] = {}

    def __len__(self) -> int:
        """Frames delivered and not yet received."""
        return len(self._ready)

    @property
    def idle(self) -> bool:
        """No frame waits to be received and no receive waits for a frame."""
        return not self._ready and not self._waiters

    def drop_all(self, detail: str) -> int:
        """Drop every frame delivered and not received; returns how many.

        Why: after a socket died mid-collective, its peers hold frames of a
        collective that will never finish, keyed by sequence numbers that start
        again from 0 once the node is rewired; kept, the next collective would
        take them for its own. A receive still waiting fails with
        :class:`SocketDeadError` (``detail`` says why) instead of waiting out the timeout.
        """
        dropped = len(self._ready)
        self._ready.clear()
        for (src, _tag, _seq), waiter in self._waiters.items():
            if not waiter.done():
                waiter.set_exception(SocketDeadError(src, detail))
        return dropped

    def put(self, frame: Frame) -> None:
        """Deliver a validated frame; a second frame with the same key is a FrameError."""
        if frame.dst != self.rank:
            raise FrameError(f"frame for socket {frame.dst} delivered to socket {self.rank}")
        key = (frame.src, frame.tag, frame.seq)
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
            return
        if key in self._ready or waiter is not None:
            raise FrameError(f"duplicate frame (src, tag, seq) = {key} for socket {self.rank}")
        self._ready[key] = frame

    async def get(self, src: int, tag: int, seq: int, timeout_s: float) -> Frame:
        """The frame (src, tag, seq); P2PTimeoutError if it has not come within ``timeout_s``."""
        key = (src, tag, seq)
        frame = self._ready.pop(key, None)
        if frame is not None:
            return frame
        if key in self._waiters:
            raise RuntimeError(f"two receives wait for the same frame {key}")
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout_s)  # wall-clock ok
        except asyncio.TimeoutError:
            raise P2PTimeoutError(
                src, f"socket {self.rank} waited {timeout_s} s for (tag {tag}, seq {seq})"
            ) from None
        finally:
            del self._waiters[key]
