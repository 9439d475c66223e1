"""Tier 2: socket actors on a local Ray (session fixture) give the in-process nanoseconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sn40l_emu import units
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import OutOfMemory, SocketDeadError
from sn40l_emu.program import (
    Algo,
    AllocOp,
    CollectiveKind,
    CollectiveOp,
    CopyOp,
    KernelOp,
    Launch,
    MemStream,
    Program,
    Stage,
    StreamKind,
    Tier,
)

pytestmark = pytest.mark.ray
PROFILE = load_profile("sn40l")


@pytest.fixture(scope="module")
def ray_node(ray_session: None) -> Iterator[object]:
    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(PROFILE, name="test-ray-node")
    yield node
    node.close()


def _program(i: int) -> Program:
    return Program.of(f"p{i}", [
        AllocOp(f"w{i}", Tier.DDR, units.GiB, read_only=True),
        CopyOp("swap-in", Tier.DDR, Tier.HBM, units.GiB, segment=f"w{i}"),
        KernelOp("k", (Stage("s", 10**11 * (i + 1), units.MiB),),
                 (MemStream(Tier.HBM, units.GiB, StreamKind.WEIGHTS),), Launch.SO, True),
    ])


def test_status_lists_eight_sockets(ray_node) -> None:  # type: ignore[no-untyped-def]
    st = ray_node.status()
    assert [s["index"] for s in st] == list(range(8))
    assert all(s["tiers"]["hbm"]["capacity_bytes"] == 64 * units.GiB for s in st)
    assert all(s["ray_node"] for s in st)


def test_programs_give_same_ns_as_local_node(ray_node) -> None:  # type: ignore[no-untyped-def]
    progs = {i: _program(i) for i in range(8)}
    before = ray_node.clocks()
    remote = ray_node.run_programs(progs)
    local = LocalNode(PROFILE).run_programs(progs)
    for i in range(8):
        assert remote[i].duration_ns == local[i].duration_ns
        assert remote[i].breakdown_ns == local[i].breakdown_ns
        assert remote[i].start_ns == before[i]
    copy_ns = units.transfer_ns(units.GiB, PROFILE.dma.ddr_hbm_bw_bytes_per_s)
    assert remote[0].breakdown_ns["copies"] == copy_ns


def test_out_of_memory_surfaces_from_actor(ray_node) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OutOfMemory) as err:
        ray_node.run_programs({0: Program.of("oom", [AllocOp("huge", Tier.HBM, 65 * units.GiB)])})
    assert err.value.tier == "hbm"


def test_killed_actor_is_reported(ray_session: None) -> None:
    import ray

    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(PROFILE, n_sockets=2)
    try:
        ray.kill(node.actors[1], no_restart=True)
        with pytest.raises(SocketDeadError) as err:
            node.run_programs({0: _program(0), 1: _program(1)})
        assert err.value.socket == 1
    finally:
        node.close()


def test_a_step_cut_by_a_killed_process_leaves_no_unread_error(ray_session: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Socket 3's process dies before a ring all-reduce: the step raises SocketDeadError at
    once, and every survivor's outcome (its own SocketDeadError) is read, then or once
    recovery has ended the survivors' step, so Ray logs no "Unhandled error" traceback for
    it when the refs are collected."""
    import gc
    import time

    import ray._private.worker as ray_worker

    from sn40l_emu.cluster.ray_node import RayNode

    unread: list[Exception] = []
    monkeypatch.setattr(ray_worker, "_unhandled_error_handler", unread.append)
    group = (0, 1, 2, 3)
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (4096,), "float32", buffer="x", algo=Algo.RING)
    node = RayNode.create(PROFILE, n_sockets=4, trace=False)
    try:
        node.load_tensors({i: {"x": np.full(4096, i + 1, dtype=np.float32)} for i in group})
        node.kill(3, process=True)
        with pytest.raises(SocketDeadError):
            node.run_programs({i: Program.of("ar", [op]) for i in group})
        assert node.recover(timeout_s=120) == [3]  # survivors still in the step end it here
        for _ in range(20):  # Ray reports an unread error when its ref is freed
            gc.collect()
            time.sleep(0.1)  # wall-clock ok: a bounded wait for Ray's report
        assert unread == []
    finally:
        node.close()



def _spy_frames(local: Any) -> list[tuple[int, bytes, Any]]:
    """Every frame the in-process node's transports deliver from now on: (dst, header, payload copy)."""
    frames: list[tuple[int, bytes, Any]] = []
    for t in local.transports.values():
        async def spy(dst: int, header: bytes, payload: Any, deliver: Any = t._deliver) -> None:
            frames.append((dst, header, None if payload is None else payload.copy()))
            await deliver(dst, header, payload)

        t._deliver = spy  # type: ignore[method-assign]
    return frames

def _ring_all_reduce(node: Any) -> dict[int, Any]:
    """A functional ring all-reduce over sockets 0-3 of socket i's (i + 1)s: every element becomes 10."""
    group = (0, 1, 2, 3)
    node.load_tensors({i: {"x": np.full(4096, i + 1, dtype=np.float32)} for i in group})
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (4096,), "float32", buffer="x", algo=Algo.RING)
    return dict(node.run_programs({i: Program.of("ar", [op]) for i in group}))


def test_recovery_after_a_real_kill_drops_the_survivors_queued_frames(ray_session: None) -> None:
    """Socket 3's process is killed while a collective's frames are queued on the survivors
    (every frame of a ring all-reduce, as an in-process run sends them, with wrong data, as
    if the collective had been cut short). Recovery drops and counts them; kept, the next
    collective would take them for its own, since sequence numbers restart at 0."""
    from sn40l_emu.cluster.ray_node import RayNode

    local = LocalNode(PROFILE, 4)
    frames = _spy_frames(local)
    clean_ns = [r.breakdown_ns["collectives"] for r in _ring_all_reduce(local).values()]
    stale = [(dst, h, np.full_like(p, 1000.0)) for dst, h, p in frames if dst != 3]
    assert stale

    node = RayNode.create(PROFILE, n_sockets=4, trace=False)
    try:
        node._get([node.actors[dst].deliver.remote(h, p) for dst, h, p in stale], 120)
        node.kill(3, process=True)
        assert node.recover(timeout_s=120) == [3]
        after = _ring_all_reduce(node)
        assert [float(node.get_tensors(i, ["x"])["x"][0]) for i in range(4)] == [10.0] * 4
        assert [r.breakdown_ns["collectives"] for r in after.values()] == clean_ns
        report = node.last_recovery
        assert report.recreated == (3,) and report.dropped_frames == len(stale)
        assert f"{len(stale)} queued frame(s) dropped" in str(report)
    finally:
        node.close()



def _all_reduce_program() -> Program:
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, tuple(range(8)), (1 << 20,), "bfloat16", algo=Algo.RING)
    return Program.of("ar", [op])


def _wirings(node: Any) -> list[int]:
    return [s["wirings"] for s in node._get([a.p2p_status.remote() for a in node.actors], 60)]


def test_power_cycles_keep_the_connections_and_the_nanoseconds(ray_node) -> None:  # type: ignore[no-untyped-def]
    """A sweep power-cycles the node before every row: the actors restart in place over the
    same connections (sequences from 0, idle links), and every row gives the in-process
    nanoseconds. A frame left in a mailbox (a step cut short) makes that socket rewire
    instead, and the stale frame goes with its old mailbox."""
    progs = dict.fromkeys(range(8), _all_reduce_program())
    local = LocalNode(PROFILE)
    frames = _spy_frames(local)
    want = {i: (r.start_ns, r.end_ns, r.breakdown_ns) for i, r in local.run_programs(progs).items()}
    ray_node.reset()
    ray_node.run_programs(progs)
    before = _wirings(ray_node)
    for _ in range(3):
        ray_node.reset()
        got = ray_node.run_programs(progs)
        assert {i: (r.start_ns, r.end_ns, r.breakdown_ns) for i, r in got.items()} == want
    assert _wirings(ray_node) == before

    _, header, payload = next(f for f in frames if f[0] == 0)  # one of socket 0's frames, again
    ray_node._get([ray_node.actors[0].deliver.remote(header, payload)], 60)
    ray_node.reset()
    got = ray_node.run_programs(progs)
    assert {i: (r.start_ns, r.end_ns, r.breakdown_ns) for i, r in got.items()} == want
    assert _wirings(ray_node) == [before[0] + 1, *before[1:]]


def _composition(n: int) -> Program:
    ops = [AllocOp(f"expert{e}", Tier.DDR, units.GiB, read_only=True) for e in range(n)]
    return Program.of(f"load {n}", [*ops, CopyOp("in", Tier.HOST, Tier.DDR, n * units.GiB, blocking=False)])


def _switch(e: int) -> Program:
    return Program.of(f"switch {e}", [AllocOp(f"expert{e}@hbm", Tier.HBM, units.GiB, read_only=True),
                                     CopyOp("in", Tier.DDR, Tier.HBM, units.GiB, blocking=False)])


def _seed(node: Any, n: int, e: int) -> list[tuple[int, int, int]]:
    """One seed of a sweep row: power-cycle, load, the host's delay, a switch, a kernel."""
    node.reset()
    load = node.run_programs(dict.fromkeys(range(8), _composition(n)))
    t = max(r.end_ns for r in load.values()) + 1_000
    node.advance_clocks(dict.fromkeys(range(8), t))
    switch = node.run_programs(dict.fromkeys(range(8), _switch(e)))
    last = node.run_programs({i: _program(i) for i in range(8)})
    return [(r.start_ns, r.end_ns, sum(r.breakdown_ns.values())) for res in (load, switch, last) for r in res.values()]


def test_repeats_since_a_power_cycle_are_answered_without_calls_and_run_later(ray_node) -> None:  # type: ignore[no-untyped-def]
    """Seeds of a sweep row repeat the same load and often the same switch on a power-cycled
    node: the node answers them from what it saw (cluster/replay.py), defers them, and the
    actors run them with their next call; every figure is the in-process one, and the
    sockets' memory holds what the deferred programs allocated."""
    local = LocalNode(PROFILE)
    want = {(n, e): _seed(local, n, e) for n, e in ((4, 0), (4, 1), (5, 0))}
    calls: list[int] = []
    get = ray_node._get

    def counted(refs: list[Any], timeout_s: float | None = None) -> list[Any]:
        calls.append(len(refs))
        return get(refs, timeout_s)

    ray_node._get = counted
    per_seed = []
    try:
        for n, e in ((4, 0), (4, 0), (4, 1), (4, 1), (5, 0), (4, 0)):
            before = len(calls)
            assert _seed(ray_node, n, e) == want[(n, e)]
            per_seed.append(len(calls) - before)
        st = ray_node.status()  # the deferred programs run first: the actors agree with the node
    finally:
        ray_node._get = get
    # a repeat of a whole seed needs no call; a new switch after a repeated load runs with the
    # load deferred into its call; a new composition runs everything
    assert per_seed == [3, 0, 2, 0, 3, 0]
    assert len(calls) == sum(per_seed) + 2  # status: the deferred seed, then the status itself
    assert [s["clock_ns"] for s in st] == ray_node.clocks()
    assert all(s["tiers"]["ddr"]["used_bytes"] == 5 * units.GiB for s in st)
    assert all(s["tiers"]["hbm"]["used_bytes"] >= units.GiB for s in st)  # expert0@hbm and the kernel's copy
