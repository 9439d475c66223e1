"""Space for a shared-memory arena, reserved for real before it is used: a small /dev/shm
costs speed, never a crash.

Why: an arena (:mod:`sn40l_emu.p2p.wire.shm_arena`) is a sparse file on a memory
filesystem (/dev/shm, a tmpfs). Making the file 256 MiB long and mapping it succeed
whatever the filesystem's size; the first write to a page the filesystem has no room
for kills the process with SIGBUS -- a socket actor dying in the middle of a
collective. Docker gives a container 64 MiB of /dev/shm unless told otherwise, and in
a 64 MiB ring all-reduce the arena of one link holds about 136 MiB (the result built
in it and the frames in flight). So an arena reserves the bytes a block will cover with
``posix_fallocate`` before it hands the block out: a filesystem without room answers
ENOSPC there, the block is refused, and the frame or result takes the path it takes
where there is no arena (the frame inline on the socket, the result from the
process's warm pool). Only wall time differs: same frames, bits and nanoseconds.

The cap (``FS_SHARE``): an arena grows to ``end`` bytes only while ``end <= FS_SHARE x
(bytes it holds + bytes the filesystem has free)``, i.e. it never takes more than half
of the space that is there for it. Each growth so leaves at least half of what was free
for everything else on that filesystem: the other links' arenas (seven per socket
actor), Ray's object store where it lives in /dev/shm, and the user's own processes.
Arenas alone can never fill /dev/shm, so they never push another user of it into the
SIGBUS this module avoids. On a host with room (/dev/shm is half the RAM by default)
the cap never binds; in a 64 MiB container the first arenas get at most 32, 16, ... MiB
and the rest of the traffic goes over the sockets. The cap is a courtesy; the
reservation is what is safe (two processes may both see the same free space: then
``posix_fallocate`` refuses the second).

The first refusal in a process is logged once (as Ray logs that its object store left
/dev/shm for /tmp) and every refusal is counted in :data:`CAPS`.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Most an arena may hold of the space there is for it (its own bytes + the free bytes).
FS_SHARE = 0.5
#: Reservations grow in steps of this many bytes (fewer system calls), down to one page
#: when a step would break the cap. Divides ``shm_arena.KEEP_BYTES``.
GROW_STEP_BYTES = 2 * 1024 * 1024
_PAGE = mmap.PAGESIZE


@dataclass
class CapRecord:
    """Growths refused in this process, and why the first one was."""

    refused: int = 0
    first: str = ""
    logged: bool = False


#: The process's record (one per socket actor process; shared by an in-process node's links).
CAPS = CapRecord()
_lock = threading.Lock()


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _refuse(directory: str, held_bytes: int, why: str) -> None:
    with _lock:
        CAPS.refused += 1
        first = not CAPS.logged
        if first:
            CAPS.first, CAPS.logged = why, True
    if first:
        log.warning(
            "the shared-memory arena in %s is capped at %d bytes: %s. Frames that do not fit go "
            "over the socket and results are built in process memory instead (slower; same "
            "results and nanoseconds). Inside a Docker container a larger /dev/shm helps "
            "(docker run --shm-size=2g). Logged once per process.",
            directory, held_bytes, why,
        )


def grow(fd: int, directory: str, held_bytes: int, want_bytes: int, size_bytes: int) -> int | None:
    """Reserve the arena file's bytes from ``held_bytes`` up to at least ``want_bytes``.

    Returns the new reserved length (a step above ``want_bytes`` where the cap allows,
    at most ``size_bytes``), or None when the cap or the filesystem refuses (recorded
    in :data:`CAPS`, logged once per process); the arena then refuses the block.
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:  # no way to reserve (not Linux): an unreserved page could SIGBUS
        _refuse(directory, held_bytes, "this system has no posix_fallocate")
        return None
    try:
        st = os.fstatvfs(fd)
    except OSError as exc:
        _refuse(directory, held_bytes, f"statvfs failed ({exc})")
        return None
    room_bytes = int(FS_SHARE * (held_bytes + st.f_bavail * st.f_frsize))
    target = min(size_bytes, _round_up(want_bytes, GROW_STEP_BYTES))
    if target > room_bytes:
        target = min(size_bytes, _round_up(want_bytes, _PAGE))
    if target > room_bytes:
        _refuse(directory, held_bytes,
                f"{target} bytes would be more than {FS_SHARE:g} of the {held_bytes + st.f_bavail * st.f_frsize} "
                "bytes the filesystem has for it")
        return None
    try:
        fallocate(fd, held_bytes, target - held_bytes)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        _refuse(directory, held_bytes, f"reserving {target} bytes failed ({name}: {exc.strerror})")
        return None
    return target
