"""Shared-memory arenas for large same-host frames: one copy instead of two.

Over the Unix socket a payload is copied twice (into the kernel, out of it).
For large frames the sender instead copies the payload once into an arena --
a sparse file in its private /dev/shm directory, mapped read-write by the
sender and read-only by the receiver -- and sends only the header and the
offset (``SHM_FRAME``). The receiver hands the collective a read-only view
straight into the arena (no copy) and sends ``RELEASE offset`` back when the
last reference to that view is gone (``weakref.finalize``), so the block can
be reused. Blocks are handed out first-fit from the low end of the arena, so
the pages that get touched (and stay resident) are about the largest number
of bytes in flight on the link, not the arena's size; above ``KEEP_BYTES``
they are given back once the link has had nothing in flight for a moment.
The space a block covers is reserved before the block is handed out
(:mod:`sn40l_emu.p2p.wire.shm_space`): on a filesystem without room (a small
/dev/shm) the block is refused, never a page written that would SIGBUS.

A block may also hold a result that is built in place and sent piece by piece
(a ring all-reduce's, ``FastTransport.result_buffer``): each piece goes out by its
offset without a copy (``lend``), the receiver releases it like any block, and
the block is freed once its result array died (``disown``) and every piece lent
was released -- never while the peer may still read it.

One arena per connection: it lives as long as the connection, and when the
connection ends the sender drops it without reusing a byte of it, so a view
the receiver still holds can never be overwritten. The file is unlinked as
soon as the receiver has it mapped; the memory goes when both mappings do.

Trust: the receiver opens the arena only by a strict file name inside the
sender's own endpoint directory (which it learned over Ray, not from the
wire), as a regular file of its own user with the announced size, and every
offset is bounds-checked against the header's validated payload size. (A
process of the same user could still shrink the file under the mapping and
crash the reader with SIGBUS; that user can signal the actor anyway.)
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import re
import secrets
import stat
import weakref
from collections.abc import Callable

import numpy as np

from sn40l_emu.errors import FrameError
from sn40l_emu.p2p.wire import shm_space
from sn40l_emu.p2p.wire.codec import PayloadSpec

#: Virtual size of one link's arena (sparse: space is reserved only as far as blocks reach,
#: ``shm_space``). A frame that does not fit in its free space goes inline on the socket.
#: Room for two ring all-reduce results of 64 MiB built in it (the input of a call is
#: often the last call's result) and their frames.
ARENA_BYTES = 256 * 1024 * 1024
#: Pages an idle arena keeps (warm for the next frames); above this they are given back
#: (MADV_REMOVE) once nothing has been in flight for TRIM_DELAY_S, so a burst of huge
#: frames does not pin memory, while a stream of them does not pay page faults again.
KEEP_BYTES = 16 * 1024 * 1024
TRIM_DELAY_S = 1.0
#: Largest arena a receiver maps.
MAX_ARENA_BYTES = 1024 * 1024 * 1024
_ALIGN = 64
_NAME = re.compile(r"arena-[0-9a-f]{16}")


def _round_up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class SendArena:
    """The sender's side: a file mapped read-write, carved first-fit into blocks."""

    def __init__(self, directory: str, size: int = ARENA_BYTES) -> None:
        self.name = f"arena-{secrets.token_hex(8)}"
        self.path = os.path.join(directory, self.name)
        self.size = size
        self.directory = directory
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        self._fd = fd  # kept open: space is reserved through it as blocks reach further
        #: bytes from offset 0 whose space is reserved (posix_fallocate, ``shm_space``): no
        #: block reaches past it, so no page written can be one the filesystem lacks
        self.reserved_bytes = 0
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, bytes), sorted by offset
        self._base = np.frombuffer(self._mm, np.uint8, 1).ctypes.data  # address of offset 0
        self._orphans: set[int] = set()  # owned blocks whose result died, pieces still lent
        self._used: dict[int, int] = {}
        self._high = 0  # end of the highest block handed out since the last trim (pages touched)
        #: blocks handed out so far: a trim armed at one count fires only if none was since
        #: (idle for the whole delay, not merely idle at the moment the timer fires)
        self.reserved = 0
        #: blocks that hold a live result (offset -> bytes); their pieces may be lent out
        self._owned: dict[int, int] = {}
        #: pieces of owned blocks sent as frames and not released yet (offset -> how many)
        self._lent: dict[int, int] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    def put(self, payload: np.ndarray) -> int | None:
        """Copy ``payload`` into a free block; its offset, or None when no block fits."""
        nbytes = int(payload.nbytes)
        off = self.reserve(nbytes)
        if off is not None:
            np.copyto(self.block(off, nbytes), payload.reshape(-1).view(np.uint8))
        return off

    def reserve(self, nbytes: int) -> int | None:
        """Take a free block of ``nbytes`` (first fit) without writing it; None when none fits
        or the filesystem has no room for it (``shm_space``: never a page it cannot back)."""
        want = _round_up(max(nbytes, 1))
        for i, (off, size) in enumerate(self._free):
            if size >= want:
                if off + want > self.reserved_bytes:
                    held = shm_space.grow(self._fd, self.directory, self.reserved_bytes, off + want, self.size)
                    if held is None:
                        return None  # no room on the filesystem: the caller goes without the arena
                    self.reserved_bytes = held
                if size == want:
                    del self._free[i]
                else:
                    self._free[i] = (off + want, size - want)
                self._used[off] = want
                self.reserved += 1
                self._high = max(self._high, off + want)
                return off
        return None

    def block(self, offset: int, nbytes: int) -> np.ndarray:
        """Writable uint8 view of ``nbytes`` at ``offset`` (a block handed out by reserve)."""
        return np.frombuffer(self._mm, np.uint8, nbytes, offset)

    def own(self, offset: int) -> None:
        """Mark a reserved block as a result whose pieces are sent with :meth:`lend`; it is
        freed once :meth:`disown` was called and every piece lent was released."""
        self._owned[offset] = self._used[offset]

    def piece(self, address: int, nbytes: int) -> int | None:
        """Offset of ``nbytes`` at memory ``address`` when they lie inside one owned block
        and the offset is aligned (a frame can point at them); else None."""
        offset = address - self._base
        if offset % _ALIGN or offset < 0:
            return None
        for start, size in self._owned.items():
            if start <= offset and offset + nbytes <= start + size:
                return offset
        return None

    def lend(self, offset: int) -> None:
        """A piece of an owned block (:meth:`piece`) went out in a frame; RELEASE ends it."""
        self._lent[offset] = self._lent.get(offset, 0) + 1

    @property
    def lent(self) -> int:
        """Pieces lent out and not released yet."""
        return sum(self._lent.values())

    def disown(self, offset: int) -> None:
        """The result in an owned block died: free it once no piece of it is lent."""
        if self._owned.pop(offset, None) is not None:
            self._orphans.add(offset)
            self._free_orphans()

    def _free_orphans(self) -> None:
        for start in list(self._orphans):
            end = start + self._used[start]
            if not any(start <= off < end for off in self._lent):
                self._orphans.discard(start)
                self._give_back(start)

    def release(self, offset: int) -> bool:
        """Give a block back (the receiver dropped its view); False for an unknown offset."""
        count = self._lent.get(offset)
        if count is not None:  # a piece of a result block
            if count > 1:
                self._lent[offset] = count - 1
            else:
                del self._lent[offset]
                self._free_orphans()
            return True
        if offset in self._owned or offset in self._orphans:
            return False  # a result block is never released by the peer
        return self._give_back(offset)

    def _give_back(self, offset: int) -> bool:
        size = self._used.pop(offset, None)
        if size is None:
            return False
        i = bisect.bisect_left(self._free, (offset, 0))
        self._free.insert(i, (offset, size))
        if i + 1 < len(self._free) and offset + size == self._free[i + 1][0]:  # merge right
            self._free[i] = (offset, size + self._free[i + 1][1])
            del self._free[i + 1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:  # merge left
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free[i][1])
            del self._free[i]
        return True

    @property
    def trimmable(self) -> bool:
        """Nothing in flight and pages above KEEP_BYTES touched."""
        return not self._used and self._high > KEEP_BYTES

    def trim(self) -> None:
        """Give the pages above KEEP_BYTES back to the system (only while nothing is in flight)."""
        if not self.trimmable:
            return
        end = max(-(-self._high // mmap.PAGESIZE) * mmap.PAGESIZE, self.reserved_bytes)
        madv = getattr(mmap, "MADV_REMOVE", None)
        if madv is not None:
            with contextlib.suppress(OSError, ValueError):
                self._mm.madvise(madv, KEEP_BYTES, min(end, self.size) - KEEP_BYTES)
                # the pages are gone and so is their reservation: reserved again on next use
                self.reserved_bytes = min(self.reserved_bytes, KEEP_BYTES)
        self._high = KEEP_BYTES

    def close(self) -> None:
        """Drop the sender's mapping (and the file, if the receiver never took it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RecvArena:
    """The receiver's side: the peer's arena mapped read-only; views released when dropped."""

    def __init__(self, mm: mmap.mmap, size: int, release: Callable[[int], None]) -> None:
        self._mm = mm
        self.size = size
        self._release = release

    @classmethod
    def open(cls, directory: str, name: str, size: int, release: Callable[[int], None]) -> RecvArena:
        """Map arena ``name`` of the peer whose endpoint directory is ``directory``."""
        if not _NAME.fullmatch(name):
            raise FrameError(f"arena name {name!r} is not of the form arena-<16 hex digits>")
        if not 0 < size <= MAX_ARENA_BYTES:
            raise FrameError(f"arena of {size} B is outside (0, {MAX_ARENA_BYTES}]")
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise FrameError(f"cannot open the peer's arena: {exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size != size:
                raise FrameError(f"the peer's arena {name} is not a {size} B file of ours")
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # mapped: the name is no longer needed
        return cls(mm, size, release)

    def view(self, offset: int, spec: PayloadSpec) -> np.ndarray:
        """The payload at ``offset`` as a flat read-only array (no copy); RELEASE on its death."""
        if not 0 <= offset <= self.size - spec.nbytes or offset % _ALIGN:
            raise FrameError(f"payload of {spec.nbytes} B at offset {offset} is outside the arena")
        region = np.frombuffer(self._mm, np.uint8, spec.nbytes, offset)
        fin = weakref.finalize(region, self._release, offset)
        fin.atexit = False
        return np.frombuffer(region, spec.dtype)
