"""Tier 1: the same-host fast path (Unix-domain endpoints) without Ray.

Eight FastTransports and their LocalServers share one event loop here; the
socket actors do the same across processes. Same nanoseconds and numbers as
the in-process transport; corrupt frames refused with FrameError while the
server keeps serving; a peer whose connection dies fails receives at once.
"""

from __future__ import annotations

import asyncio
import gc
import os
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ml_dtypes
import msgpack
import numpy as np
import pytest

from sn40l_emu.collectives import all_gather, all_reduce
from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.fabric.topology import make_topology
from sn40l_emu.p2p.frame import encode_frame
from sn40l_emu.p2p.inproc import gather_transports, run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.p2p.wire import codec as wire
from sn40l_emu.p2p.wire.endpoint import Endpoint, LocalServer, send_raw, sweep_stale_dirs
from sn40l_emu.p2p.wire.fast_transport import FastTransport, PeerMailbox, same_host_peers
from sn40l_emu.p2p.wire.shm_arena import KEEP_BYTES, TRIM_DELAY_S
from sn40l_emu.program import Algo, ReduceOp
from sn40l_emu.units import GB, MiB

T = TypeVar("T")
PARAMS = P2PParams(TopologyKind.FULL_MESH, LinkParams(50 * GB, 1_000), 100, 256 * MiB, 8, 5.0,
                   LinkParams(25 * GB, 5_000))
GROUP = tuple(range(8))


class FastGroup:
    """Servers and transports of ``ranks`` in the running loop (what the actors hold)."""

    def __init__(self, ranks: tuple[int, ...], params: P2PParams = PARAMS, shm_min_bytes: int | None = 4096) -> None:
        self.ranks, self.params, self.shm_min_bytes = ranks, params, shm_min_bytes
        topo = make_topology(params.topology, 8)
        self.mailboxes = {r: PeerMailbox(r) for r in ranks}
        self.servers = {
            r: LocalServer(r, 8, params.max_frame_bytes, self._mailbox_of(r), self.mailboxes[r].fail,
                           self._peer_dir)
            for r in ranks
        }
        self.networks = {r: NetworkView(r, topo, params) for r in ranks}
        self.transports: dict[int, FastTransport] = {}

    def _peer_dir(self, src: int) -> str | None:
        return self.servers[src].dir if src in self.servers else None

    def _mailbox_of(self, r: int) -> Callable[[], PeerMailbox]:
        return lambda: self.mailboxes[r]

    async def start(self) -> FastGroup:
        for s in self.servers.values():
            await s.start()
        endpoints = {r: Endpoint(r, s.path, "node-a") for r, s in self.servers.items()}
        for r in self.ranks:
            t = FastTransport(r, {}, self.mailboxes[r], self.networks[r], self.params.max_frame_bytes,
                              self.params.timeout_s, same_host_peers(r, endpoints), arena_dir=self.servers[r].dir,
                              shm_min_bytes=self.shm_min_bytes)
            await t.open()
            self.transports[r] = t
        return self

    async def close(self) -> None:
        for t in self.transports.values():
            await t.close()
        await asyncio.sleep(0)
        for s in self.servers.values():
            s.close()


def _loop_run(make: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


def _fast_all_reduce(group: tuple[int, ...], data: dict[int, Tensor], shm_min_bytes: int | None = 4096,
                     **kw: Any) -> list[tuple[Tensor, int]]:
    async def main() -> list[tuple[Tensor, int]]:
        g = await FastGroup(group, shm_min_bytes=shm_min_bytes).start()
        try:
            async def body(t: Transport) -> tuple[Tensor, int]:
                return await all_reduce(t, group, data[t.rank], 1_000, **kw)

            return await gather_transports(g.transports, body)
        finally:
            await g.close()

    return _loop_run(main)


def _inproc_all_reduce(group: tuple[int, ...], data: dict[int, Tensor], **kw: Any) -> list[tuple[Tensor, int]]:
    async def body(t: Transport) -> tuple[Tensor, int]:
        return await all_reduce(t, group, data[t.rank], 1_000, **kw)

    return run_group(group, body, PARAMS)


@pytest.mark.parametrize(
    ("algo", "chunks", "dtype", "op", "size", "shm_min"),
    [
        (Algo.RING, 4, np.float32, ReduceOp.SUM, 100_003, 4096),  # 50 KB frames via the arenas
        (Algo.RING, 4, np.float32, ReduceOp.SUM, 100_003, None),  # ... and inline on the socket
        (Algo.ONESHOT, 1, ml_dtypes.bfloat16, ReduceOp.MAX, 4096, 4096),
        (Algo.TREE, 1, np.float16, ReduceOp.SUM, 3000, None),
        (Algo.AUTO, 0, np.float32, ReduceOp.MIN, 1 << 18, None),  # 1 MiB inline: read straight into place
    ],
)
@pytest.mark.slow
def test_same_ns_and_bits_as_in_process(
    algo: Algo, chunks: int, dtype: type, op: ReduceOp, size: int, shm_min: int | None
) -> None:
    rng = np.random.default_rng(3)
    data: dict[int, Tensor] = {r: rng.standard_normal(size).astype(dtype) for r in GROUP}
    fast = _fast_all_reduce(GROUP, data, algo=algo, chunks=chunks, op=op, shm_min_bytes=shm_min)
    ref = _inproc_all_reduce(GROUP, data, algo=algo, chunks=chunks, op=op)
    for (f_res, f_end), (r_res, r_end) in zip(fast, ref, strict=True):
        assert f_end == r_end
        assert isinstance(f_res, np.ndarray) and isinstance(r_res, np.ndarray)
        assert f_res.tobytes() == r_res.tobytes()


@pytest.mark.slow
def test_symbolic_and_subgroup() -> None:
    sym: dict[int, Tensor] = {r: SymbolicTensor((1 << 28,), "bfloat16") for r in GROUP}  # 512 MiB, never allocated
    fast = _fast_all_reduce(GROUP, sym, algo=Algo.RING, chunks=16)
    ref = _inproc_all_reduce(GROUP, sym, algo=Algo.RING, chunks=16)
    assert [e for _, e in fast] == [e for _, e in ref]
    assert fast[0][0] == SymbolicTensor((1 << 28,), "bfloat16")

    sub = (1, 3, 6)
    shards: dict[int, Tensor] = {r: np.full((2, 3), r, np.int64) for r in sub}

    async def main() -> list[tuple[Tensor, int]]:
        g = await FastGroup(sub).start()
        try:
            async def body(t: Transport) -> tuple[Tensor, int]:
                return await all_gather(t, sub, shards[t.rank], 0, algo=Algo.RING, chunks=2)

            return await gather_transports(g.transports, body)
        finally:
            await g.close()

    out = _loop_run(main)
    assert all(np.array_equal(res, np.concatenate([shards[r] for r in sub])) for res, _ in out)  # type: ignore[arg-type]


def _frame(src: int, dst: int, payload: np.ndarray, seq: int = 0, tag: int = 7) -> bytes:
    header, flat = encode_frame(src, dst, tag, seq, payload, np.array([5]))
    assert flat is not None
    return wire.frame_prefix(header) + flat.tobytes()


def _header(**fields: Any) -> bytes:
    base = {"version": 1, "src": 0, "dst": 1, "tag": 7, "seq": 0, "dtype": "float32", "shape": [4],
            "payload_bytes": 16, "symbolic": False, "chunks": 1, "arrive_ns": [5]}
    base.update(fields)
    return msgpack.packb(base)


def test_corrupt_frames_are_refused_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        path = g.servers[1].path
        bad = {
            "garbage header": wire.KIND_U32.pack(wire.Kind.FRAME, 2) + b"\x93\x01",
            "header over the limit": wire.KIND_U32.pack(wire.Kind.FRAME, 1 << 21),
            "huge payload": wire.frame_prefix(_header(shape=[1 << 40], payload_bytes=1 << 42)),
            "payload size != shape": wire.frame_prefix(_header(shape=[5])) + bytes(16),
            "bad dtype": wire.frame_prefix(_header(dtype="object")) + bytes(16),
            "src != HELLO": _frame(2, 1, np.zeros(4, np.float32)),
            "dst != server": _frame(0, 3, np.zeros(4, np.float32)),
            "unknown kind": b"\x63",
        }
        for data in bad.values():
            with pytest.raises(FrameError):  # refused from the header: a wait would end in a socket timeout
                await asyncio.to_thread(send_raw, path, 0, data)
        with pytest.raises(FrameError, match="not a peer"):
            await asyncio.to_thread(send_raw, path, 1, b"")  # HELLO as itself
        assert g.servers[1].rejected == len(bad) + 1
        assert len(g.mailboxes[1]) == 0 and not g.mailboxes[1].is_dead(0)
        # a good frame over a raw connection is accepted; then the transports still work
        await asyncio.to_thread(send_raw, path, 0, _frame(0, 1, np.arange(4, dtype=np.float32), tag=99))
        got = await g.mailboxes[1].get(0, 99, 0, 1.0)
        assert got.payload is not None and got.payload.tolist() == [0, 1, 2, 3]
        await g.transports[0].send(1, 5, np.ones(3, np.float32), np.array([0]))
        payload, _ = await g.transports[1].recv(0, 5)
        assert np.array_equal(payload, np.ones(3, np.float32))  # type: ignore[arg-type]
        await g.close()

    _loop_run(main)


def test_rejected_frame_surfaces_at_the_sender_then_it_reconnects() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        t0 = g.transports[0]
        # a frame the receiver refuses: a duplicate (src, tag, seq) key
        await t0.send(1, 5, np.ones(2, np.float32), np.array([0]))
        t0._send_seq[(1, 5)] = 0
        await t0.send(1, 5, np.ones(2, np.float32), np.array([0]))
        with pytest.raises(FrameError, match="rejected a frame: duplicate"):
            await t0.sync()
        await t0.send(1, 6, np.full(2, 3, np.float32), np.array([0]))  # a fresh connection
        payload, _ = await g.transports[1].recv(0, 6)
        assert payload.tolist() == [3, 3]  # type: ignore[union-attr]
        await t0.flush()
        await g.close()

    _loop_run(main)


def test_lost_connection_fails_receives_at_once() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        waiting = asyncio.ensure_future(g.transports[0].recv(1, 3))
        await asyncio.sleep(0.05)
        link = g.transports[1]._links[0]
        link._shut()  # socket 1 "dies": its connection ends without BYE
        with pytest.raises(SocketDeadError) as info:
            await waiting
        assert info.value.socket == 1
        assert not isinstance(info.value, P2PTimeoutError)  # the lost connection, not the receive timeout
        with pytest.raises(SocketDeadError):
            await g.transports[0].recv(1, 3)
        await g.close()

    _loop_run(main)


def test_graceful_close_is_not_a_death_and_sweep_keeps_live_dirs() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        d = g.servers[0].dir
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        await g.transports[1].close()
        await asyncio.sleep(0.05)
        assert not g.mailboxes[0].is_dead(1)
        assert sweep_stale_dirs(os.path.dirname(d)) >= 0 and os.path.isdir(d)  # ours is alive
        await g.close()
        assert not os.path.exists(d)

    _loop_run(main)


def test_wire_prefix_layout() -> None:
    header = _header()
    msg = wire.frame_prefix(header)
    assert msg[0] == wire.Kind.FRAME and struct.unpack_from("<I", msg, 1)[0] == len(header)
    spec = wire.peek_header(header, 1 << 20)
    assert (spec.symbolic, spec.nbytes, spec.dtype) == (False, 16, np.dtype(np.float32))
    with pytest.raises(FrameError, match="max_frame_bytes"):
        wire.peek_header(header, len(header) + 15)


async def _until(cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``cond`` up to ``timeout_s`` (generous: a loaded machine is slow, a met condition returns at once)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.slow
def test_arena_blocks_come_back_when_the_views_die() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        t0, t1 = g.transports[0], g.transports[1]
        for i in range(6):  # blocks are reused from the low end: the footprint stays one frame
            await t0.send(1, 9, np.full(1 << 16, i, np.float32), np.array([0]))
            payload, _ = await t1.recv(0, 9)
            assert isinstance(payload, np.ndarray) and not payload.flags.writeable
            assert payload[0] == i
            arena = t0._links[1].arena
            assert arena is not None and arena.used_bytes == 1 << 18
            del payload
            await _until(lambda: arena.used_bytes == 0)  # noqa: B023
        assert arena._free == [(0, arena.size)]
        big = np.arange(5 << 20, dtype=np.float32)  # 20 MiB: the arena's pages above 16 MiB go back after it
        await t0.send(1, 9, big, np.array([0]))
        payload, _ = await t1.recv(0, 9)
        assert np.array_equal(payload, big)  # type: ignore[arg-type]
        del payload
        await _until(lambda: arena.used_bytes == 0)
        assert arena._high > KEEP_BYTES  # kept warm for a moment ...
        await _until(lambda: arena._high == KEEP_BYTES, TRIM_DELAY_S + 2)  # ... then given back
        await t0.send(1, 9, big[: 1 << 16], np.array([0]))
        payload, _ = await t1.recv(0, 9)
        assert np.array_equal(payload, big[: 1 << 16])  # type: ignore[arg-type]
        await g.close()

    _loop_run(main)


def test_ring_result_built_in_the_arena_sends_its_pieces_without_a_copy() -> None:
    """A ring all-reduce whose segments are large enough builds its result in the link's arena;
    same bits and nanoseconds as in process, and the blocks are freed once the results die."""
    rng = np.random.default_rng(5)
    data: dict[int, Tensor] = {r: rng.standard_normal(8 * 4096).astype(np.float32) for r in GROUP}
    ref = _inproc_all_reduce(GROUP, data, algo=Algo.RING, chunks=4)

    async def main() -> None:
        g = await FastGroup(GROUP, shm_min_bytes=4096).start()

        async def body(t: Transport) -> tuple[Tensor, int]:
            return await all_reduce(t, GROUP, data[t.rank], 1_000, algo=Algo.RING, chunks=4)

        got = await gather_transports(g.transports, body)
        arenas = [g.transports[r]._links[(r + 1) % 8].arena for r in GROUP]
        for (res, end), (r_res, r_end), arena in zip(got, ref, arenas, strict=True):
            assert end == r_end and isinstance(res, np.ndarray) and isinstance(r_res, np.ndarray)
            assert res.tobytes() == r_res.tobytes()
            assert arena is not None and arena.lent == 0  # settled: the peer read every piece
            assert arena.piece(res.ctypes.data, res.nbytes) is not None  # the result is in the arena
        again = await gather_transports(g.transports, body)  # a second call while the first lives
        assert [a.tobytes() for a, _ in again] == [a.tobytes() for a, _ in got]  # type: ignore[union-attr]
        del got, again, res, r_res
        gc.collect()
        await _until(lambda: all(a is not None and a.used_bytes == 0 for a in arenas))  # freed
        await g.close()

    _loop_run(main)


def test_arena_is_trimmed_only_after_a_whole_idle_delay() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        t0, t1 = g.transports[0], g.transports[1]
        big = np.arange(5 << 20, dtype=np.float32)  # 20 MiB: above the pages an idle arena keeps
        await t0.send(1, 9, big, np.array([0]))
        payload, _ = await t1.recv(0, 9)
        del payload
        link = t0._links[1]
        arena = link.arena
        assert arena is not None
        await _until(lambda: arena.used_bytes == 0)
        armed = arena.reserved
        await t0.send(1, 9, big[: 1 << 16], np.array([0]))  # busy again during the delay
        payload, _ = await t1.recv(0, 9)
        del payload
        await _until(lambda: arena.used_bytes == 0)
        if link._trim is not None:
            link._trim.cancel()
        link._trim_arena(armed)  # the timer armed before that frame fires: no trim, armed again
        assert arena._high > KEEP_BYTES and link._trim is not None
        link._trim.cancel()
        link._trim_arena(arena.reserved)  # idle since it was armed: trimmed
        assert arena._high == KEEP_BYTES
        await g.close()

    _loop_run(main)


def test_corrupt_arena_messages_are_refused() -> None:
    from sn40l_emu.p2p.wire.shm_arena import SendArena

    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        path = g.servers[1].path
        header, _ = encode_frame(0, 1, 7, 0, np.zeros(1024, np.float32), np.array([5]))
        real = SendArena(g.servers[0].dir, 1 << 20)
        cases = {
            "bad name": wire.arena("arena-../../etc/passwd", 1 << 20),
            "no such arena": wire.arena("arena-0123456789abcdef", 1 << 20),
            "wrong size": wire.arena(real.name, 1 << 21),
            "SHM_FRAME before ARENA": wire.shm_frame(header, 0),
            "offset outside": wire.arena(real.name, 1 << 20) + wire.shm_frame(header, (1 << 20) - 64),
        }
        for what, data in cases.items():
            with pytest.raises(FrameError):
                await asyncio.to_thread(send_raw, path, 0, data)
            assert not g.mailboxes[1].is_dead(0), what
        real.close()
        await g.transports[0].send(1, 5, np.ones(1 << 12, np.float32), np.array([0]))  # still serving
        payload, _ = await g.transports[1].recv(0, 5)
        assert float(np.sum(payload)) == 4096  # type: ignore[arg-type]
        await g.close()

    _loop_run(main)


def test_staged_blocks_are_sent_in_place_and_unsent_ones_come_back_at_flush() -> None:
    async def main() -> None:
        g = await FastGroup((0, 1)).start()
        t0, t1 = g.transports[0], g.transports[1]
        staged = await t0.staging(1, 1 << 14, np.dtype(np.float32))
        assert staged is not None and staged.flags.writeable
        arena = t0._links[1].arena
        assert arena is not None and arena.used_bytes == 1 << 16
        np.add(np.arange(1 << 14, dtype=np.float32), 1, out=staged)  # computed in place ...
        puts = arena.put
        arena.put = None  # type: ignore[method-assign,assignment]  # ... so sending it copies nothing
        await t0.send(1, 9, staged, np.array([0]))
        arena.put = puts  # type: ignore[method-assign]
        payload, _ = await t1.recv(0, 9)
        assert np.array_equal(payload, np.arange(1, (1 << 14) + 1, dtype=np.float32))  # type: ignore[arg-type]
        del payload
        await _until(lambda: arena.used_bytes == 0)
        assert await t0.staging(1, 10, np.dtype(np.float32)) is None  # under shm_min_bytes: none
        assert await t1.staging(0, 1 << 14, np.dtype(np.float32)) is not None  # never sent ...
        other = t1._links[0].arena
        assert other is not None and other.used_bytes == 1 << 16
        await t1.flush()
        assert other.used_bytes == 0  # ... given back by the collective's flush
        await g.close()

    _loop_run(main)


def test_a_result_block_is_freed_only_when_dead_and_every_piece_released(tmp_path: Any) -> None:
    from sn40l_emu.p2p.wire.shm_arena import SendArena

    arena = SendArena(str(tmp_path), 1 << 20)
    try:
        off = arena.reserve(1 << 16)
        assert off is not None
        arena.own(off)
        block = arena.block(off, 1 << 16)
        assert arena.piece(block.ctypes.data + 4096, 4096) == off + 4096
        assert arena.piece(block.ctypes.data + 4, 64) is None  # not aligned: a frame cannot point there
        assert arena.piece(block.ctypes.data + (1 << 16) - 64, 128) is None  # runs out of the block
        arena.lend(off + 4096)
        arena.lend(off)
        assert not arena.release(off + 8192)  # never lent: refused
        assert arena.release(off)
        assert not arena.release(off)  # the block itself is not the peer's to release
        arena.disown(off)  # the result died, one piece still out
        assert arena.used_bytes == 1 << 16 and arena.reserve(1 << 20) is None
        assert arena.release(off + 4096)  # the last piece back: the block is free
        assert arena.used_bytes == 0 and arena.lent == 0
    finally:
        arena.close()
