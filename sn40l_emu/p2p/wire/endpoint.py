"""The receiving end of the same-host fast path: one Unix-domain server per socket actor.

Control stays on Ray: a socket actor opens its server in ``listen()`` and
returns an :class:`Endpoint` (the socket file and the actor's Ray node id);
the node hands every actor the endpoints of all the others in ``connect()``,
and a peer on the same Ray node then sends its frames over a direct
connection to this server instead of as a Ray actor task (see
:mod:`sn40l_emu.p2p.wire.fast_transport`).

Security: the socket file lives in a fresh private directory (mode 0700,
under /dev/shm when it exists), so only processes of the same user can
connect. Nothing on the wire is unpickled: the header length is checked
against the header limit before the header is read, the header is parsed
with the frame module's bounded msgpack settings, and header + payload
length is checked against ``max_frame_bytes`` before a payload buffer is
allocated; the payload bytes become an array with ``np.frombuffer`` (or a
view into the sender's shared-memory arena, :mod:`sn40l_emu.p2p.wire.shm_arena`)
and :func:`~sn40l_emu.p2p.frame.decode_frame` validates the whole frame, as
on the Ray path. A rejected frame is answered with an ERROR message and that
connection is closed (the byte stream cannot be trusted after it); the
server, the actor and every other connection carry on.

A connection that ends without a BYE means its sender died: every receive
waiting for (or later asking for) a frame from that socket fails at once
with :class:`SocketDeadError`, instead of after the P2P timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sn40l_emu.errors import FrameError, SocketDeadError
from sn40l_emu.p2p.frame import decode_frame
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.p2p.wire import codec as wire
from sn40l_emu.p2p.wire.shm_arena import RecvArena

log = logging.getLogger(__name__)

#: Prefix of the private directories; the pid after it lets a later server sweep dead ones.
DIR_PREFIX = "sn40l-p2p-"
SOCKET_NAME = "p2p.sock"
#: Bytes of the reusable receive buffer for message heads and small frames (it grows for
#: a header longer than this, up to the header limit).
SCRATCH_BYTES = 256 * 1024
#: Unparsed bytes are moved to the front of the scratch buffer when less than this is free
#: behind them (a payload that is not all in yet is received into its own buffer instead).
_MIN_FREE = 64 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where socket ``socket`` listens for same-host frames, and the Ray node it runs on."""

    socket: int
    path: str
    node_id: str


def base_dir() -> str:
    """/dev/shm when it is a writable directory (memory-backed), else the temp dir."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def sweep_stale_dirs(base: str) -> int:
    """Remove our private directories left by killed actors (pid gone and nobody listening).

    A killed actor (``ray.kill``) runs no clean-up, so its directory would
    stay; the next server on the machine removes it. Returns how many went.
    """
    removed = 0
    uid = os.getuid()
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(DIR_PREFIX):
                continue
            pid_text = entry.name[len(DIR_PREFIX):].split("-", 1)[0]
            try:
                if not pid_text.isdigit() or entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if not entry.is_dir(follow_symlinks=False) or _pid_alive(int(pid_text)):
                    continue
                if _connectable(Path(entry.path) / SOCKET_NAME):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
            except OSError:
                continue
    return removed


class LocalServer:
    """Accepts same-host peers' connections and puts their frames into this socket's mailbox.

    ``mailbox`` is a callable because a reset gives the actor a fresh mailbox
    while the server (and its path, which peers know) stays. ``peer_lost`` is
    told when a peer's connection ends without a BYE. ``peer_dir(src)`` is the
    endpoint directory of socket ``src`` as learned over Ray (the only place a
    shared-memory arena of that peer is opened from); None refuses arenas.
    """

    def __init__(
        self,
        rank: int,
        n_sockets: int,
        max_frame_bytes: int,
        mailbox: Callable[[], Mailbox],
        peer_lost: Callable[[int, str], None],
        peer_dir: Callable[[int], str | None] = lambda src: None,
    ) -> None:
        self.rank = rank
        self.peer_dir = peer_dir
        self.n_sockets = n_sockets
        self.max_frame_bytes = max_frame_bytes
        self.mailbox = mailbox
        self.peer_lost = peer_lost
        self.dir = ""
        self.path = ""
        self.rejected = 0  # frames refused so far (for status and tests)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[InboundProtocol] = set()

    async def start(self) -> str:
        """Create the private directory and listen; returns the socket path."""
        base = base_dir()
        sweep_stale_dirs(base)
        self.dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=base)  # mode 0700
        os.chmod(self.dir, 0o700)
        self.path = os.path.join(self.dir, SOCKET_NAME)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: InboundProtocol(self), self.path)
        os.chmod(self.path, 0o600)
        return self.path

    def close(self) -> None:
        """Stop listening, drop every connection, remove the directory."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.abort()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- called by the connections ----------------------------------------
    def check_hello(self, rank: int) -> int:
        if not 0 <= rank < self.n_sockets or rank == self.rank:
            raise FrameError(f"HELLO from socket {rank}: not a peer of socket {self.rank}")
        return rank

    def deliver(self, src: int, header: bytes, payload: np.ndarray | None) -> None:
        """Validate one frame (FrameError on any problem) and queue it by (src, tag, seq)."""
        frame = decode_frame(header, payload, self.max_frame_bytes)
        if frame.src != src:
            raise FrameError(f"frame says it is from socket {frame.src} on socket {src}'s connection")
        self.mailbox().put(frame)


class InboundProtocol(asyncio.BufferedProtocol):
    """One peer's connection: parses messages straight out of the socket buffer.

    Small messages are parsed from a reusable scratch buffer; a payload that
    is not all there yet gets its own buffer (sized by the validated header)
    and the rest of it is received directly into it (no extra copy).
    """

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.src: int | None = None
        self._transport: asyncio.Transport | None = None
        self._scratch = bytearray(SCRATCH_BYTES)
        self._lo = 0  # unparsed bytes are scratch[lo:hi]
        self._hi = 0
        self._body: np.ndarray | None = None  # payload (uint8) being received directly
        self._filled = 0
        self._body_of: tuple[bytes, wire.PayloadSpec] | None = None
        self._closing = False  # we closed it (error) or the peer said BYE
        self._limit = wire.header_limit(server.max_frame_bytes)
        self._arena: RecvArena | None = None
        self._loop = asyncio.get_running_loop()

    # ---- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.server._conns.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None:
            return self._body[self._filled :].data
        if self._lo == self._hi:
            self._lo = self._hi = 0
        elif len(self._scratch) - self._hi < _MIN_FREE:
            self._compact()
        return memoryview(self._scratch)[self._hi :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._body is not None:
                self._filled += nbytes
                if self._filled < len(self._body):
                    return
                body, (header, spec) = self._body, self._body_of  # type: ignore[misc]
                self._body, self._body_of, self._filled = None, None, 0
                self._deliver(header, spec.array(body))
            else:
                self._hi += nbytes
            while not self._closing and self._body is None and self._parse_one():
                pass
        except FrameError as exc:
            self._reject(exc)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        self._arena = None  # views still held keep the mapping alive
        if not self._closing and self.src is not None:
            detail = f"its connection to socket {self.server.rank} ended without BYE"
            if exc is not None:
                detail += f" ({type(exc).__name__}: {exc})"
            self.server.peer_lost(self.src, detail)

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # ---- parsing -----------------------------------------------------------
    def _compact(self) -> None:
        n = self._hi - self._lo
        self._scratch[:n] = self._scratch[self._lo : self._hi]  # same length: no resize
        self._lo, self._hi = 0, n

    def _need(self, total: int) -> bool:
        """True when ``total`` bytes of the current message are in; else make room for them."""
        if self._hi - self._lo >= total:
            return True
        if total > len(self._scratch):
            grown = bytearray(max(total, 2 * len(self._scratch)))
            n = self._hi - self._lo
            grown[:n] = memoryview(self._scratch)[self._lo : self._hi]
            self._scratch, self._lo, self._hi = grown, 0, n
        elif self._lo + total > len(self._scratch):
            self._compact()
        return False

    def _parse_one(self) -> bool:
        """Handle one complete message at the front; False when more bytes are needed."""
        if self._hi == self._lo:
            return False
        buf, lo = self._scratch, self._lo
        kind = buf[lo]
        if kind == wire.Kind.FRAME:
            if self.src is None:
                raise FrameError("FRAME before HELLO")
            if not self._need(5):
                return False
            (hlen,) = wire.U32.unpack_from(buf, lo + 1)
            if hlen > self._limit:
                raise FrameError(f"header of {hlen} B exceeds the limit of {self._limit} B")
            if not self._need(5 + hlen):
                return False
            header = bytes(buf[lo + 5 : lo + 5 + hlen])
            spec = wire.peek_header(header, self.server.max_frame_bytes)
            self._lo = lo + 5 + hlen
            if spec.symbolic:
                self._deliver(header, None)
                return True
            body = spec.buffer()
            have = min(spec.nbytes, self._hi - self._lo)
            body[:have] = np.frombuffer(self._scratch, np.uint8, have, self._lo)
            self._lo += have
            if have == spec.nbytes:
                self._deliver(header, spec.array(body))
                return True
            self._body, self._filled, self._body_of = body, have, (header, spec)
            return False
        if kind == wire.Kind.SHM_FRAME:
            if self._arena is None:
                raise FrameError("SHM_FRAME before ARENA")
            if not self._need(5):
                return False
            (hlen,) = wire.U32.unpack_from(buf, lo + 1)
            if hlen > self._limit:
                raise FrameError(f"header of {hlen} B exceeds the limit of {self._limit} B")
            if not self._need(5 + hlen + 8):
                return False
            buf, lo = self._scratch, self._lo
            header = bytes(buf[lo + 5 : lo + 5 + hlen])
            (offset,) = wire.U64.unpack_from(buf, lo + 5 + hlen)
            self._lo = lo + 5 + hlen + 8
            spec = wire.peek_header(header, self.server.max_frame_bytes)
            if spec.symbolic:
                raise FrameError("a symbolic frame has no payload to put in shared memory")
            self._deliver(header, self._arena.view(offset, spec))
            return True
        if kind == wire.Kind.ARENA:
            if self.src is None:
                raise FrameError("ARENA before HELLO")
            if not self._need(wire.ARENA_MSG_BYTES):
                return False
            if self._arena is not None:
                raise FrameError("second ARENA on one connection")
            name = bytes(buf[lo + 1 : lo + 1 + wire.ARENA_NAME_BYTES]).decode("ascii", "replace")
            (size,) = wire.U64.unpack_from(buf, lo + 1 + wire.ARENA_NAME_BYTES)
            self._lo += wire.ARENA_MSG_BYTES
            directory = self.server.peer_dir(self.src)
            if not directory:
                raise FrameError(f"no endpoint directory known for socket {self.src}: arenas refused")
            self._arena = RecvArena.open(directory, name, size, self._on_view_dropped)
            return True
        if kind == wire.Kind.HELLO:
            if not self._need(5):
                return False
            if self.src is not None:
                raise FrameError("second HELLO on one connection")
            (rank,) = wire.U32.unpack_from(buf, lo + 1)
            self.src = self.server.check_hello(rank)
            self._lo += 5
            return True
        if kind == wire.Kind.PING:
            if not self._need(9):
                return False
            (token,) = wire.U64.unpack_from(buf, lo + 1)
            self._lo += 9
            assert self._transport is not None
            self._transport.write(wire.pong(token))
            return True
        if kind == wire.Kind.BYE:
            self._lo += 1
            self._closing = True
            assert self._transport is not None
            self._transport.close()
            return False
        raise FrameError(f"unknown message kind {kind}")

    def _deliver(self, header: bytes, payload: np.ndarray | None) -> None:
        assert self.src is not None
        self.server.deliver(self.src, header, payload)

    def _on_view_dropped(self, offset: int) -> None:
        """An arena view died (any thread): tell the sender its block is free."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._send_release, offset)

    def _send_release(self, offset: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(wire.release(offset))

    def _reject(self, exc: FrameError) -> None:
        """Tell the sender, drop this connection (its stream is out of step), keep serving."""
        self.server.rejected += 1
        log.warning("socket %d rejected a frame from socket %s: %s", self.server.rank, self.src, exc)
        self._closing = True
        self._body = None
        if self._transport is not None:
            self._transport.write(wire.error(str(exc)))
            self._transport.close()


def send_raw(path: str, rank: int, data: bytes, timeout_s: float = 10.0) -> None:
    """Connect to an endpoint as socket ``rank``, send ``data`` (any bytes, e.g. a corrupt
    frame), and wait until the server has handled it: returns if it was accepted, raises
    :class:`FrameError` with the server's reason if it was rejected. For tests and tools."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(wire.hello(rank) + data + wire.ping(1))
        reply = b""
        while True:
            if len(reply) >= 9 and reply[0] == wire.Kind.PONG:
                s.sendall(wire.BYE)
                return
            if len(reply) >= 5 and reply[0] == wire.Kind.ERROR:
                (n,) = wire.U32.unpack_from(reply, 1)
                if len(reply) >= 5 + n:
                    raise FrameError(reply[5 : 5 + n].decode("utf-8", "replace"))
            chunk = s.recv(65536)
            if not chunk:
                raise SocketDeadError(-1, f"endpoint {path} closed the connection without an answer")
            reply += chunk
