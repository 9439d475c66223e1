"""Ray transport: frames between socket actors.

``send`` asks the local network view for arrival times, encodes the frame
and calls the peer actor's ``deliver(header, payload)`` (which runs
:func:`sn40l_emu.p2p.delivery.handle_delivery`); the header is msgpack bytes,
the payload a numpy array that Ray moves with its own zero-copy path.
``recv`` waits on the local mailbox with the P2P timeout.

Sends are fire-and-forget for speed, but never silently: every ``deliver``
call's result is kept and checked -- finished ones on each send and while a
receive waits (so a peer we sent to that died fails the receive at once, not
after the P2P timeout), all of them in :meth:`RayTransport.flush`
(collectives call it at the end) -- so a dead peer surfaces as
:class:`SocketDeadError` and a rejected frame as :class:`FrameError`. A peer
we only receive from is declared dead by the receive timeout
(:class:`P2PTimeoutError`, a SocketDeadError).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError

from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.p2p.frame import Frame
from sn40l_emu.p2p.framed import FramedTransport
from sn40l_emu.p2p.mailbox import Mailbox


class RayTransport(FramedTransport):
    """The transport of one socket actor; ``peers`` maps socket index -> actor handle."""

    def __init__(
        self,
        rank: int,
        peers: Mapping[int, Any],
        mailbox: Mailbox,
        network: NetworkView,
        max_frame_bytes: int,
        timeout_s: float,
    ) -> None:
        super().__init__(rank, network, mailbox, max_frame_bytes, timeout_s)
        self._peers = dict(peers)
        # (dst, its ObjectRef -- kept so the result stays referenced --, a future on it)
        self._pending: list[tuple[int, Any, asyncio.Future[Any]]] = []

    @property
    def pending(self) -> int:
        """Deliveries not yet confirmed."""
        return len(self._pending)

    async def _deliver(self, dst: int, header: bytes, payload: np.ndarray | None) -> None:
        peer = self._peers.get(dst)
        if peer is None:
            raise SocketDeadError(dst, f"socket {self.rank} has no handle for it")
        try:
            ref = peer.deliver.remote(header, payload)
        except RayActorError as exc:
            raise SocketDeadError(dst, str(exc)) from exc
        self._pending.append((dst, ref, asyncio.wrap_future(ref.future())))
        self._check_done()

    def _check_done(self) -> None:
        """Drop confirmed deliveries; raise for the first one that failed."""
        still: list[tuple[int, Any, asyncio.Future[Any]]] = []
        failure: tuple[int, BaseException] | None = None
        for dst, ref, fut in self._pending:
            if not fut.done():
                still.append((dst, ref, fut))
                continue
            exc = fut.exception()  # retrieving it also keeps asyncio from logging it
            if exc is not None and failure is None:
                failure = (dst, exc)
        self._pending = still
        if failure is not None:
            raise _translate(*failure)

    def quiet(self) -> bool:
        """Also every delivery sent over Ray confirmed (none outstanding)."""
        return super().quiet() and not self._pending

    async def flush(self) -> None:
        """Wait (up to the P2P timeout) until every delivery so far is confirmed."""
        if not self._pending:
            return
        futs = [f for _, _, f in self._pending]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wait(futs), self.timeout_s)  # wall-clock ok
        self._check_done()
        if self._pending:
            dst = self._pending[0][0]
            raise SocketDeadError(dst, f"delivery not confirmed within {self.timeout_s} s")

    async def quiesce(self, dead: Collection[int] = ()) -> int:
        """Wait (up to the P2P timeout) for every delivery so far; count and forget those that
        failed or never came (their peer died), instead of raising as :meth:`flush` does."""
        if self._pending:
            futs = [f for _, _, f in self._pending]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.wait(futs), self.timeout_s)  # wall-clock ok
        lost = 0
        for _, _, fut in self._pending:
            if not fut.done() or fut.exception() is not None:  # retrieved: no "never retrieved" log
                lost += 1
        self._pending = []
        return lost

    async def _fetch(self, src: int, tag: int, seq: int) -> Frame:
        """Wait for the frame, but give up at once if one of our deliveries fails meanwhile
        (a peer we sent to died: waiting for the P2P timeout would only delay the error)."""
        get = asyncio.ensure_future(self.mailbox.get(src, tag, seq, self.timeout_s))
        try:
            while True:
                self._check_done()
                watch = {fut for _, _, fut in self._pending}
                if not watch:
                    return await get
                done, _ = await asyncio.wait({get, *watch}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    return get.result()
        except P2PTimeoutError:
            self._check_done()  # a failed delivery explains the silence better
            raise
        finally:
            if not get.done():
                get.cancel()


def _translate(dst: int, exc: BaseException) -> Exception:
    if isinstance(exc, FrameError):  # a RayTaskError wrapping FrameError is also a FrameError
        return FrameError(f"socket {dst} rejected a frame: {exc}")
    if isinstance(exc, ray.exceptions.RayTaskError):
        return exc  # the peer is alive; its handler failed for another reason: show it as is
    if isinstance(exc, ray.exceptions.RayError):  # actor died, unavailable, object lost
        return SocketDeadError(dst, f"{type(exc).__name__}: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
