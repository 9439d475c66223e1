"""A small /dev/shm costs the fast path speed, never a crash (``p2p/wire/shm_space.py``).

An arena's blocks are reserved on the filesystem before they are handed out; where
there is no room (or the cap of half the free space would be broken) the block is
refused and the frame or result goes without the arena: same bits, same nanoseconds.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import shm_small_child as child
import test_p2p_fast as fast

from sn40l_emu.p2p.transport import Tensor
from sn40l_emu.p2p.wire import endpoint, shm_space
from sn40l_emu.p2p.wire.shm_arena import KEEP_BYTES, SendArena
from sn40l_emu.program import Algo

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def fresh_record(monkeypatch: pytest.MonkeyPatch) -> shm_space.CapRecord:
    record = shm_space.CapRecord()
    monkeypatch.setattr(shm_space, "CAPS", record)
    return record


def _enospc(fd: int, offset: int, length: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _small_fs(monkeypatch: pytest.MonkeyPatch, size_bytes: int) -> dict[str, int]:
    """Pretend the filesystem holds ``size_bytes``: fstatvfs reports what the arenas did not reserve."""
    taken = {"bytes": 0}
    real = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        if taken["bytes"] + length > size_bytes:
            _enospc(fd, offset, length)
        real(fd, offset, length)
        taken["bytes"] += length

    def fstatvfs(fd: int) -> Any:
        return SimpleNamespace(f_bavail=(size_bytes - taken["bytes"]) // 4096, f_frsize=4096)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    monkeypatch.setattr(os, "fstatvfs", fstatvfs)
    return taken


def _allocated_bytes(arena: SendArena) -> int:
    return os.fstat(arena._fd).st_blocks * 512


@pytest.fixture
def shm_dir() -> Iterator[str]:
    """A directory where the arenas really live (/dev/shm where there is one)."""
    directory = tempfile.mkdtemp(prefix="sn40l-test-arena-", dir=endpoint.base_dir())
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_block_is_reserved_on_the_filesystem_before_it_is_handed_out(shm_dir: str) -> None:
    arena = SendArena(shm_dir, 64 * MIB)
    try:
        assert _allocated_bytes(arena) == 0  # sparse until used
        off = arena.reserve(5 * MIB)
        assert off == 0 and arena.reserved_bytes >= 5 * MIB
        assert _allocated_bytes(arena) >= 5 * MIB  # backed for real: no page of it can SIGBUS
        second = arena.reserve(20 * MIB)
        assert second is not None and arena.reserved_bytes >= second + 20 * MIB
        arena.release(off)
        arena.release(second)
        arena.trim()  # the pages above KEEP_BYTES go back, and their reservation with them
        assert arena.reserved_bytes == KEEP_BYTES
        assert _allocated_bytes(arena) <= KEEP_BYTES
        assert arena.reserve(30 * MIB) is not None and _allocated_bytes(arena) >= 30 * MIB  # reserved again
    finally:
        arena.close()


def test_no_room_refuses_the_block_and_logs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture,
                                                 fresh_record: shm_space.CapRecord) -> None:
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    arena = SendArena(str(tmp_path), 8 * MIB)
    try:
        with caplog.at_level(logging.WARNING, logger=shm_space.__name__):
            assert arena.reserve(MIB) is None
            assert arena.put(np.ones(1024, np.float32)) is None  # the caller sends it inline
        assert arena.used_bytes == 0 and arena.reserved_bytes == 0
        assert fresh_record.refused == 2 and "ENOSPC" in fresh_record.first
        warnings = [r for r in caplog.records if r.name == shm_space.__name__]
        assert len(warnings) == 1 and "--shm-size" in warnings[0].getMessage()
        monkeypatch.undo()  # room again: the same arena works
        assert arena.reserve(MIB) == 0 and arena.reserved_bytes >= MIB
    finally:
        arena.close()


def test_arenas_never_take_more_than_half_the_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fresh_record: shm_space.CapRecord) -> None:
    fs_bytes = 40 * MIB
    taken = _small_fs(monkeypatch, fs_bytes)
    arenas = [SendArena(str(tmp_path), 64 * MIB) for _ in range(3)]
    try:
        for arena in arenas:  # each fills up in 1 MiB blocks until refused
            free_before = fs_bytes - taken["bytes"]
            while arena.reserve(MIB) is not None:
                pass
            assert arena.reserved_bytes <= shm_space.FS_SHARE * free_before
            assert arena.reserved_bytes + MIB > shm_space.FS_SHARE * free_before - shm_space.GROW_STEP_BYTES
            assert fs_bytes - taken["bytes"] >= (1 - shm_space.FS_SHARE) * free_before  # half left for others
        assert [a.reserved_bytes // MIB for a in arenas] == [20, 10, 5]
        assert fresh_record.refused == 3 and "more than 0.5" in fresh_record.first
    finally:
        for arena in arenas:
            arena.close()


@pytest.mark.parametrize("refuse", ["enospc", "small_fs"])
def test_an_all_reduce_over_refused_arenas_gives_the_same_bits_and_nanoseconds(
        refuse: str, monkeypatch: pytest.MonkeyPatch, fresh_record: shm_space.CapRecord) -> None:
    group = (0, 1, 2, 3)
    rng = np.random.default_rng(3)
    data = {r: rng.standard_normal(1 << 20).astype(np.float32) for r in group}  # 4 MiB: 1 MiB frames
    ref = fast._inproc_all_reduce(group, dict(data), algo=Algo.RING, chunks=4)
    roomy = fast._fast_all_reduce(group, dict(data), shm_min_bytes=256 * 1024, algo=Algo.RING, chunks=4)
    assert fresh_record.refused == 0
    if refuse == "enospc":
        monkeypatch.setattr(os, "posix_fallocate", _enospc)
    else:
        _small_fs(monkeypatch, 6 * MIB)  # some arenas get room, the others none
    tight = fast._fast_all_reduce(group, dict(data), shm_min_bytes=256 * 1024, algo=Algo.RING, chunks=4)
    assert fresh_record.refused > 0  # the arenas were refused ...
    for (want, want_ns), (a, a_ns), (b, b_ns) in zip(ref, roomy, tight, strict=True):
        assert a_ns == b_ns == want_ns  # ... and nothing but wall time differs
        assert np.asarray(b).tobytes() == np.asarray(a).tobytes() == np.asarray(want).tobytes()


def _namespace_runner(directory: str) -> Callable[[list[str]], subprocess.CompletedProcess[str]] | None:
    """A way to run a command with a private 8 MiB tmpfs on ``directory`` (mount namespace), or None."""
    mount = f"mount -t tmpfs -o size=8m tmpfs {directory} && exec \"$@\""
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "sh", "-c", mount, "sh", "true"], capture_output=True, text=True,
                               timeout=30, check=False)
        if probe.returncode == 0:
            root = str(Path(__file__).resolve().parents[1])  # the child imports this checkout
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
            return lambda argv, p=prefix: subprocess.run(  # type: ignore[misc]
                [*p, "sh", "-c", mount, "sh", *argv], capture_output=True, text=True, timeout=300, check=False,
                env=env)
    return None


def test_a_real_8_mib_tmpfs_does_not_kill_the_all_reduce(tmp_path: Path) -> None:
    """Before arenas reserved their space, this child died of SIGBUS (rc -7)."""
    directory = tmp_path / "small"
    directory.mkdir()
    try:
        run = _namespace_runner(str(directory))
    except (OSError, subprocess.SubprocessError):
        run = None
    if run is None:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare)")
    done = run([sys.executable, str(Path(child.__file__)), str(directory)])
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["refused"] > 0 and "capped" in done.stderr
    data: dict[int, Tensor] = dict(child.inputs())
    ref = fast._inproc_all_reduce(child.GROUP, data, algo=Algo.RING, chunks=4)
    assert got["ns"] == [int(ns) for _, ns in ref]
    assert got["digests"] == [child.digest(v) for v, _ in ref]
