"""The socket actors' transport: a direct Unix-domain connection to each peer on the same
Ray node, the Ray path (:class:`RayTransport`) to the others -- as NCCL picks SHM or NET.

Why: a frame sent as a Ray actor task costs about 2 ms of wall time (task
submission, scheduling, a gRPC round trip), so a TP8 decode step with 65
small all-reduces (3640 frames) took 7.7 s over Ray. Over a connected Unix
socket a small frame costs a few tens of microseconds (one ``send`` system
call and one message parse on the receiver's event loop).

Per peer (chosen once, in ``connect``):

* same Ray node -> its :class:`~sn40l_emu.p2p.wire.endpoint.LocalServer` over
  one long-lived connection (:mod:`sn40l_emu.p2p.wire.codec`): ``HELLO``, then per
  frame either ``FRAME`` (header + raw payload bytes on the socket: two
  copies, through the kernel) or, for payloads of ``SHM_MIN_BYTES`` and more,
  ``SHM_FRAME`` (header + offset; the payload is copied once into the link's
  shared-memory arena and the receiver reads it in place,
  :mod:`sn40l_emu.p2p.wire.shm_arena`). Threshold measured with
  ``bench/p2p_paths.py``: below ~256 KiB the socket is faster (the arena
  costs a RELEASE message per frame), from 1 MiB the arena is about twice as
  fast. Ray's object store (the Ray path) measured slower at the sizes
  tried: ~2 ms per small frame, and a 64 MiB ring all-reduce (8 MiB frames)
  1.5x slower (``bench/allreduce_wall.py``); ``RAY_PATH_MIN_BYTES`` keeps a
  switch by size should another host measure otherwise.
* other Ray nodes -> ``peer.deliver.remote(header, payload)`` as before.

Virtual time is untouched: arrival times are computed by the sender's
network view and carried in the header, receives match on (src, tag, seq),
so both paths give the in-process transport's nanoseconds.

Failures: the receiver answers a rejected frame with ERROR (raised here as
:class:`FrameError` at the next send, receive or flush) and closes that
connection; the next send reconnects. A connection that closes without BYE
(peer process gone) marks the peer dead: sends to it and receives from it
raise :class:`SocketDeadError` at once; the receive timeout still applies
to a peer that hangs without dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.p2p.frame import Frame
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.p2p.ray_transport import RayTransport
from sn40l_emu.p2p.wire import codec as wire
from sn40l_emu.p2p.wire.endpoint import Endpoint
from sn40l_emu.p2p.wire.shm_arena import TRIM_DELAY_S, SendArena

#: Payloads of at least this many bytes go through the link's shared-memory arena (one copy)
#: instead of the socket (two copies); measured with ``bench/p2p_paths.py``.
SHM_MIN_BYTES: int | None = 256 * 1024
#: Frames with at least this many payload bytes take the Ray path even to a same-node peer
#: (object store). Off: the stream measured faster at every size on the development host.
RAY_PATH_MIN_BYTES: int | None = None
#: Payloads up to this size are joined with their header into one write (one system call).
_JOIN_MAX_BYTES = 64 * 1024
#: Kernel send buffer per connection (capped by net.core.wmem_max): fewer wake-ups per MiB.
_SNDBUF_BYTES = 4 * 1024 * 1024


def _disown_soon(loop: asyncio.AbstractEventLoop, disown: Callable[[SendArena, int], None],
                 arena: SendArena, offset: int) -> None:
    """A result in an arena block died (in any thread): free the block on the link's loop."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: the arena went with it
        loop.call_soon_threadsafe(disown, arena, offset)


def same_host_peers(rank: int, endpoints: Mapping[int, Endpoint]) -> dict[int, str]:
    """Peers on the same Ray node as ``rank`` -> their endpoint paths (empty if ``rank`` has none)."""
    own = endpoints.get(rank)
    if own is None or not own.node_id:
        return {}
    return {
        s: e.path
        for s, e in endpoints.items()
        if s != rank and e.path and e.node_id == own.node_id
    }


class PeerMailbox(Mailbox):
    """A mailbox that can fail every receive from one peer at once (its connection died).

    Frames that arrived before the peer died are still handed out.
    """

    def __init__(self, rank: int) -> None:
        super().__init__(rank)
        self._dead: dict[int, str] = {}

    def fail(self, src: int, detail: str) -> None:
        self._dead.setdefault(src, detail)
        for key, waiter in list(self._waiters.items()):
            if key[0] == src and not waiter.done():
                waiter.set_exception(SocketDeadError(src, detail))

    def is_dead(self, src: int) -> bool:
        return src in self._dead

    @property
    def idle(self) -> bool:
        """Also no peer marked dead."""
        return super().idle and not self._dead

    def clear_dead(self) -> None:
        """Forget dead peers (a new wiring: ``connect`` after a socket was recreated)."""
        self._dead.clear()

    async def get(self, src: int, tag: int, seq: int, timeout_s: float) -> Frame:
        detail = self._dead.get(src)
        if detail is not None and (src, tag, seq) not in self._ready:
            raise SocketDeadError(src, detail)
        return await super().get(src, tag, seq, timeout_s)


class PeerLink:
    """The sending side of one connection to a same-host peer's endpoint (a raw socket).

    Frames are written with ``loop.sock_sendall`` straight from the payload's
    memory (no user-space buffer copy); a send returns once the kernel holds
    all of it, so a large frame waits while the peer reads (back-pressure).
    A lock keeps one frame's bytes together. The link reads only what the
    receiver sends back: ERROR (a rejected frame) and PONG; ``on_error(dst,
    exc)`` is told about the first failure (EOF without our close = death).
    """

    def __init__(self, dst: int, sock: socket.socket, on_error: Callable[[int, Exception], None],
                 arena_dir: str | None = None) -> None:
        self.dst = dst
        self.error: Exception | None = None
        self.arena: SendArena | None = None
        self._arena_dir = arena_dir  # None: no shared-memory arena on this link
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_error = on_error
        self._lock = asyncio.Lock()
        self._rx = bytearray()
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._closing = False
        self._trim: asyncio.TimerHandle | None = None
        self._settled: asyncio.Future[None] | None = None  # done when no result piece is lent
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_BYTES)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def connect(cls, dst: int, path: str, on_error: Callable[[int, Exception], None],
                      timeout_s: float, arena_dir: str | None = None) -> PeerLink:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, path), timeout_s)  # wall-clock ok
        except BaseException:
            sock.close()
            raise
        return cls(dst, sock, on_error, arena_dir)

    async def send(self, *parts: bytes | memoryview) -> None:
        """Write one message (its parts back to back); SocketDeadError if the peer is gone."""
        if self.error is not None:
            raise SocketDeadError(self.dst, f"its connection failed earlier: {self.error}")
        async with self._lock:
            try:
                for part in parts:
                    await self._loop.sock_sendall(self._sock, part)
            except OSError as exc:  # EPIPE, ECONNRESET: the peer closed the connection
                self._on_readable()  # an ERROR it sent first (a rejected frame) explains it better
                self._fail(SocketDeadError(self.dst, f"sending to its endpoint failed ({exc})"))
                if isinstance(self.error, FrameError):
                    raise FrameError(str(self.error)) from exc
                raise SocketDeadError(self.dst, f"sending to its endpoint failed ({exc})") from exc

    async def _ready_arena(self) -> SendArena | None:
        """This link's arena, announced to the peer on first use; None where there is none."""
        if self._arena_dir is None or self.error is not None:
            return None
        if self.arena is None:
            try:
                self.arena = SendArena(self._arena_dir)
            except OSError:
                self._arena_dir = None  # no shared memory here: inline from now on
                return None
            await self.send(wire.arena(self.arena.name, self.arena.size))
        return self.arena

    async def send_shm(self, header: bytes, payload: np.ndarray) -> bool:
        """Send a frame whose payload goes through this link's arena; False when it does not
        fit (or there is no arena), and the caller sends it inline instead."""
        arena = await self._ready_arena()
        offset = None if arena is None else arena.put(payload)
        if offset is None:
            return False
        await self.send(wire.shm_frame(header, offset))
        return True

    async def stage(self, nbytes: int) -> tuple[int, np.ndarray] | None:
        """A block of this link's arena for a payload the caller is about to compute:
        (offset, writable uint8 view), or None (no arena, or no room)."""
        arena = await self._ready_arena()
        offset = None if arena is None else arena.reserve(nbytes)
        if arena is None or offset is None:
            return None
        return offset, arena.block(offset, nbytes)

    async def result_block(self, nbytes: int) -> np.ndarray | None:
        """A writable uint8 block of this link's arena to hold a result whose pieces are then
        sent without a copy (:meth:`send_piece`); None when there is no arena or no room. The
        block is freed once the array dies and every piece sent was released."""
        arena = await self._ready_arena()
        offset = None if arena is None else arena.reserve(nbytes)
        if arena is None or offset is None:
            return None
        arena.own(offset)
        block = arena.block(offset, nbytes)  # its base is the mapping: views of it keep it alive
        fin = weakref.finalize(block, _disown_soon, self._loop, self._disown, arena, offset)
        fin.atexit = False
        return block

    async def send_piece(self, header: bytes, payload: np.ndarray) -> bool:
        """Send a frame whose payload lies in a result block of this link's arena, by offset
        (no copy); False when it does not (the caller sends it another way)."""
        arena = self.arena
        if arena is None or self.error is not None or not payload.flags.c_contiguous:
            return False
        offset = arena.piece(payload.ctypes.data, payload.nbytes)
        if offset is None:
            return False
        arena.lend(offset)
        await self.send(wire.shm_frame(header, offset))
        return True

    async def settled(self, timeout_s: float) -> None:
        """Return once the peer released every result piece sent to it (it has read them all),
        so the result may be written by its owner; at once if the link failed."""
        if self.arena is None or self.error is not None or self._closing or not self.arena.lent:
            return
        if self._settled is None or self._settled.done():
            self._settled = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._settled), timeout_s)  # wall-clock ok
        except asyncio.TimeoutError:
            raise P2PTimeoutError(self.dst, f"result pieces not released within {timeout_s} s") from None

    def _disown(self, arena: SendArena, offset: int) -> None:
        arena.disown(offset)
        if arena is self.arena and arena.trimmable and self._trim is None and not self._closing:
            self._trim = self._loop.call_later(TRIM_DELAY_S, self._trim_arena,  # wall-clock ok
                                               arena.reserved)

    def _settle(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    async def send_staged(self, header: bytes, offset: int) -> None:
        """Send a frame whose payload the caller already wrote into the block at ``offset``."""
        await self.send(wire.shm_frame(header, offset))

    def unstage(self, offset: int) -> None:
        """Give back a staged block that was never sent."""
        if self.arena is not None:
            self.arena.release(offset)

    async def ping(self, token: int, timeout_s: float) -> None:
        """Return once the peer has handled every message sent before this one."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pongs[token] = fut
        try:
            await self.send(wire.ping(token))
            await asyncio.wait_for(fut, timeout_s)  # wall-clock ok
        except asyncio.TimeoutError:
            raise P2PTimeoutError(self.dst, f"no PONG within {timeout_s} s") from None
        finally:
            self._pongs.pop(token, None)

    @property
    def closing(self) -> bool:
        """Closed (or closing) by this side."""
        return self._closing

    async def close(self) -> None:
        """Graceful close: BYE (after any frame in progress) tells the peer this is no death."""
        if self._closing:
            return
        self._closing = True
        if self.error is None:
            with contextlib.suppress(OSError, SocketDeadError):
                async with self._lock:
                    await self._loop.sock_sendall(self._sock, wire.BYE)
        self._shut()

    # ---- internals ---------------------------------------------------------
    def _shut(self) -> None:
        self._settle()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if self.arena is not None:  # never reused: the peer may still hold views into it
            self.arena.close()

    def _on_readable(self) -> None:
        if self._sock.fileno() < 0:
            return
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data, why = b"", f"{type(exc).__name__}: {exc}"
        else:
            why = "EOF"
        if data:
            self._rx += data
            self._parse_replies()
            return
        self._shut()
        if not self._closing:
            self._fail(SocketDeadError(self.dst, f"its endpoint connection closed ({why})"))

    def _parse_replies(self) -> None:
        while self._rx:
            kind = self._rx[0]
            if kind == wire.Kind.ERROR:
                if len(self._rx) < 5:
                    return
                (n,) = wire.U32.unpack_from(self._rx, 1)
                if n > wire.MAX_ERROR_BYTES:
                    self._protocol_error(f"ERROR of {n} B")
                    return
                if len(self._rx) < 5 + n:
                    return
                text = self._rx[5 : 5 + n].decode("utf-8", "replace")
                del self._rx[: 5 + n]
                self._fail(FrameError(f"socket {self.dst} rejected a frame: {text}"))
            elif kind == wire.Kind.RELEASE:
                if len(self._rx) < 9:
                    return
                (offset,) = wire.U64.unpack_from(self._rx, 1)
                del self._rx[:9]
                if self.arena is None or not self.arena.release(offset):
                    self._protocol_error(f"RELEASE of unknown arena block {offset}")
                    return
                if not self.arena.lent:
                    self._settle()
                if self.arena.trimmable and self._trim is None:
                    self._trim = self._loop.call_later(TRIM_DELAY_S, self._trim_arena,  # wall-clock ok
                                                       self.arena.reserved)
            elif kind == wire.Kind.PONG:
                if len(self._rx) < 9:
                    return
                (token,) = wire.U64.unpack_from(self._rx, 1)
                del self._rx[:9]
                fut = self._pongs.pop(token, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            else:
                self._protocol_error(f"unknown message kind {kind}")
                return

    def _trim_arena(self, reserved: int) -> None:
        """Idle for TRIM_DELAY_S after a burst: give the arena's extra pages back.

        Only if no block was handed out since the timer was armed (``reserved``):
        a link busy with a stream of large frames is idle for moments between
        them, and trimming then made every next frame fault its pages in again
        (measured with ``bench/allreduce_wall.py``); it is re-armed instead.
        """
        self._trim = None
        if self.arena is None or self._closing:
            return
        if self.arena.reserved == reserved:
            self.arena.trim()
        elif self.arena.trimmable:
            self._trim = self._loop.call_later(TRIM_DELAY_S, self._trim_arena,  # wall-clock ok
                                               self.arena.reserved)

    def _protocol_error(self, what: str) -> None:
        self._closing = True
        self._shut()
        self._fail(FrameError(f"socket {self.dst} sent a malformed reply: {what}"))

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
            self._on_error(self.dst, exc)
        for fut in self._pongs.values():
            if not fut.done():
                fut.set_exception(exc)


class FastTransport(RayTransport):
    """Same-host peers over their endpoints (``local_paths``), the rest over Ray actor tasks.

    Call :meth:`open` (connects to every same-host peer) before use and
    :meth:`close` when done; ``mailbox`` must be a :class:`PeerMailbox` so a
    dead peer fails the receives waiting for it.
    """

    def __init__(
        self,
        rank: int,
        peers: Mapping[int, Any],
        mailbox: PeerMailbox,
        network: NetworkView,
        max_frame_bytes: int,
        timeout_s: float,
        local_paths: Mapping[int, str],
        *,
        arena_dir: str | None = None,
        shm_min_bytes: int | None = SHM_MIN_BYTES,
        ray_path_min_bytes: int | None = RAY_PATH_MIN_BYTES,
    ) -> None:
        super().__init__(rank, peers, mailbox, network, max_frame_bytes, timeout_s)
        self.peer_mailbox = mailbox
        self.local_paths = dict(local_paths)
        self.arena_dir = arena_dir if shm_min_bytes is not None else None
        self.shm_min_bytes = shm_min_bytes if shm_min_bytes is not None else 0
        self.ray_path_min_bytes = ray_path_min_bytes
        self._links: dict[int, PeerLink] = {}
        self._errors: list[Exception] = []
        self._tokens = itertools.count(1)
        # blocks handed out by staging(): (dst, address of the block) -> (its link, offset, bytes)
        self._staged: dict[tuple[int, int], tuple[PeerLink, int, int]] = {}

    @property
    def local_peers(self) -> list[int]:
        return sorted(self.local_paths)

    async def open(self) -> None:
        """Connect to every same-host peer (their servers listen already)."""
        await asyncio.gather(*(self._connect(dst) for dst in self.local_paths))

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.close() for link in links))

    def quiet(self) -> bool:
        """Also no failure reported, no arena block staged, every connection healthy."""
        return (super().quiet() and not self._errors and not self._staged
                and all(link.error is None and not link.closing for link in self._links.values()))

    async def sync(self) -> None:
        """Return once every same-host peer has handled every frame sent to it so far."""
        results = await asyncio.gather(
            *(link.ping(next(self._tokens), self.timeout_s) for link in self._links.values()),
            return_exceptions=True,
        )
        self._raise_errors()  # a reported failure first (and only once)
        for res in results:
            if isinstance(res, BaseException):
                raise res

    async def quiesce(self, dead: Collection[int] = ()) -> int:
        """Every live same-host peer has handled what we sent it (a PING answered after it);
        failures reported meanwhile are forgotten: the node is being recovered."""
        links = [link for dst, link in self._links.items() if dst not in dead and link.error is None]
        results = await asyncio.gather(*(link.ping(next(self._tokens), self.timeout_s) for link in links),
                                       return_exceptions=True)
        self._errors.clear()
        lost = sum(isinstance(r, BaseException) for r in results)
        return lost + await super().quiesce(dead)

    # ---- the FramedTransport hooks -------------------------------------------
    async def _deliver(self, dst: int, header: bytes, payload: np.ndarray | None) -> None:
        if dst not in self.local_paths or (
            self.ray_path_min_bytes is not None
            and payload is not None
            and payload.nbytes >= self.ray_path_min_bytes
        ):
            await super()._deliver(dst, header, payload)
            return
        self._raise_errors()
        staged = None if payload is None or not self._staged else self._staged.pop(
            (dst, payload.ctypes.data), None)
        link = self._links.get(dst)
        if link is None or isinstance(link.error, FrameError):
            link = await self._connect(dst)  # a rejected frame closed the old connection
        if staged is not None and staged[0] is link and payload is not None and staged[2] == payload.nbytes:
            await link.send_staged(header, staged[1])  # already in the arena: no copy
            return
        if (payload is not None and self.arena_dir is not None and payload.nbytes >= self.shm_min_bytes
                and await link.send_piece(header, payload)):
            return  # a piece of a result that lives in the arena: no copy
        if (payload is not None and self.arena_dir is not None and payload.nbytes >= self.shm_min_bytes
                and await link.send_shm(header, payload)):
            return
        prefix = wire.frame_prefix(header)
        if payload is None or payload.nbytes == 0:
            await link.send(prefix)
        elif payload.nbytes <= _JOIN_MAX_BYTES:
            await link.send(prefix + payload.tobytes())
        else:
            await link.send(prefix, payload.view(np.uint8).data)

    async def staging(self, dst: int, count: int, dtype: np.dtype) -> np.ndarray | None:
        """Where to compute the next payload for ``dst`` so that sending it copies nothing: a
        block of the link's shared-memory arena (same-host peers, payloads of at least
        ``shm_min_bytes``), or None. Sending that array (whole) to ``dst`` sends the block;
        a block not sent by the next :meth:`flush` is given back there."""
        nbytes = count * np.dtype(dtype).itemsize
        if (dst not in self.local_paths or self.arena_dir is None or nbytes < max(1, self.shm_min_bytes)
                or (self.ray_path_min_bytes is not None and nbytes >= self.ray_path_min_bytes)):
            return None
        link = self._links.get(dst)
        if link is None or link.error is not None:
            return None
        got = await link.stage(nbytes)
        if got is None:
            return None
        offset, block = got
        values = block.view(dtype)
        self._staged[(dst, values.ctypes.data)] = (link, offset, nbytes)
        return values

    async def result_buffer(self, dst: int, count: int, dtype: np.dtype) -> np.ndarray | None:
        """A flat writable array for a result whose pieces of at least ``shm_min_bytes`` are
        then sent to ``dst`` without a copy: a block of that link's shared-memory arena
        (same-host peers), or None. Call :meth:`settle` before the result is handed on."""
        link = self._links.get(dst)
        nbytes = count * np.dtype(dtype).itemsize
        if (link is None or link.error is not None or self.arena_dir is None
                or nbytes < max(1, self.shm_min_bytes)
                or (self.ray_path_min_bytes is not None and nbytes >= self.ray_path_min_bytes)):
            return None
        block = await link.result_block(nbytes)
        return None if block is None else block.view(dtype)

    async def settle(self) -> None:
        """Wait until every same-host peer released the result pieces sent to it."""
        await asyncio.gather(*(link.settled(self.timeout_s) for link in list(self._links.values())))

    async def _fetch(self, src: int, tag: int, seq: int) -> Frame:
        self._raise_errors()
        if self.pending:  # Ray deliveries outstanding: watch them while waiting
            return await super()._fetch(src, tag, seq)
        try:
            return await self.mailbox.get(src, tag, seq, self.timeout_s)
        except P2PTimeoutError:
            self._raise_errors()  # a failure we saw meanwhile explains the silence better
            raise

    async def flush(self) -> None:
        staged, self._staged = self._staged, {}
        for link, offset, _ in staged.values():  # staged but never sent (the collective failed)
            link.unstage(offset)
        self._raise_errors()  # link sends complete before _deliver returns: nothing to wait for
        await super().flush()

    # ---- internals ---------------------------------------------------------
    async def _connect(self, dst: int) -> PeerLink:
        if self.peer_mailbox.is_dead(dst):
            raise SocketDeadError(dst, "its endpoint connection was lost earlier")
        try:
            link = await PeerLink.connect(dst, self.local_paths[dst], self._on_link_error, self.timeout_s,
                                          self.arena_dir)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SocketDeadError(dst, f"cannot connect to its endpoint: {exc}") from exc
        old = self._links.get(dst)
        if old is not None:
            await old.close()
        self._links[dst] = link
        await link.send(wire.hello(self.rank))
        return link

    def _on_link_error(self, dst: int, exc: Exception) -> None:
        self._errors.append(exc)
        if isinstance(exc, SocketDeadError):
            self.peer_mailbox.fail(dst, str(exc._init_args[1]))

    def _raise_errors(self) -> None:
        """Raise (once) the first failure a link reported since the last call."""
        if self._errors:
            exc = self._errors.pop(0)
            raise exc
