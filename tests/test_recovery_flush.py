"""Recovery flushes the survivors' in-flight traffic (in-process; the Ray path is in test_ray_node.py).

A socket that dies inside a collective leaves frames of that collective queued
in its peers' mailboxes. After recovery every sequence number starts again
from 0, so a frame kept would be taken by the next collective for its own.
Recovery drops them, counts them in its report, and the next collective gives
the right numbers and the nanoseconds of a node that never failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import SocketDeadError
from sn40l_emu.p2p.frame import decode_frame, encode_frame
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp, Program

PROFILE = load_profile("sn40l")
GROUP = (0, 1, 2, 3)
ELEMS = 4096


def _all_reduce(node: Any) -> dict[int, Any]:
    """A functional ring all-reduce of socket i's (i + 1)s over the group: every element becomes 10."""
    node.load_tensors({i: {"x": np.full(ELEMS, i + 1, dtype=np.float32)} for i in GROUP})
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, GROUP, (ELEMS,), "float32", buffer="x", algo=Algo.RING)
    return dict(node.run_programs({i: Program.of("ar", [op]) for i in GROUP}))


def _frames_of_a_ring_all_reduce() -> list[tuple[int, bytes, Any]]:
    """Every frame (dst, header, payload) of the ring all-reduce, as an in-process run sends them,
    with wrong data: what a collective cut short leaves queued (deterministic, unlike a race)."""
    node = LocalNode(PROFILE, len(GROUP))
    frames: list[tuple[int, bytes, Any]] = []
    for t in node.transports.values():
        async def spy(dst: int, header: bytes, payload: Any, deliver: Any = t._deliver) -> None:
            frames.append((dst, header, None if payload is None else np.full_like(payload, 1000.0)))
            await deliver(dst, header, payload)

        t._deliver = spy
    _all_reduce(node)
    return frames


def _queue(transports: Any, frames: list[tuple[int, bytes, Any]], dead: int) -> int:
    """Put the frames addressed to the survivors into their mailboxes; returns how many."""
    stale = [(dst, h, p) for dst, h, p in frames if dst != dead]
    for dst, h, p in stale:
        transports[dst].mailbox.put(decode_frame(h, p, 1 << 30))
    return len(stale)


def test_mailbox_drop_all_counts_frames_and_fails_waiting_receives() -> None:
    async def main() -> None:
        box = Mailbox(1)
        for seq in range(3):
            header, payload = encode_frame(0, 1, 7, seq, np.zeros(2, np.float32), np.array([seq]))
            box.put(decode_frame(header, payload, 1 << 20))
        waiting = asyncio.ensure_future(box.get(2, 7, 0, 60.0))
        await asyncio.sleep(0)
        assert box.drop_all("recovering") == 3 and len(box) == 0
        with pytest.raises(SocketDeadError, match="recovering"):
            await waiting  # at once, not after the 60 s receive timeout

    asyncio.run(main())


def test_stale_frames_kept_would_corrupt_the_next_collective() -> None:
    """The hazard the flush removes: queued frames of an earlier collective are taken as the
    next one's (same source, tag and sequence once numbering restarts)."""
    from sn40l_emu.errors import FrameError

    node = LocalNode(PROFILE, len(GROUP))
    assert _queue(node.transports, _frames_of_a_ring_all_reduce(), dead=-1) > 0
    try:
        _all_reduce(node)
    except FrameError as exc:  # the real frame met the stale one under the same key
        assert "duplicate frame" in str(exc)
    else:
        assert float(node.get_tensors(0, ["x"])["x"][0]) != 10.0  # or the stale data was summed


def test_a_kill_mid_collective_then_recovery_drops_the_queued_frames_and_reports_them() -> None:
    from sn40l_emu.errors import SocketKilledError
    from sn40l_emu.socket_actor.state_changes import FailAt

    clean = _all_reduce(LocalNode(PROFILE, len(GROUP)))
    clean_ns = [r.breakdown_ns["collectives"] for r in clean.values()]
    node = LocalNode(PROFILE, len(GROUP))
    node.apply_change([3], FailAt(clean_ns[0] // 2))  # socket 3 dies halfway through the collective
    with pytest.raises(SocketKilledError):
        _all_reduce(node)
    # frames of the cut-short collective still arriving on the survivors after the step ended
    queued = _queue(node.transports, _frames_of_a_ring_all_reduce(), dead=3)
    node.kill(3)
    assert node.recover() == [3]
    report = node.last_recovery
    assert report.recreated == (3,) and report.dropped_frames == queued
    assert f"{queued} queued frame(s) dropped" in str(report)
    assert all(len(node.transports[i].mailbox) == 0 for i in GROUP)

    node.advance_clocks(dict.fromkeys(GROUP, max(node.clocks())))  # a barrier before the retry
    after = _all_reduce(node)
    assert [float(node.get_tensors(i, ["x"])["x"][0]) for i in GROUP] == [10.0] * 4
    assert [r.breakdown_ns["collectives"] for r in after.values()] == clean_ns


def test_drop_in_flight_restarts_sequences_so_the_group_can_run_again() -> None:
    """The transport-level flush alone (what each surviving actor does): queued frames go,
    sequence numbers start at 0 again on every member, the next collective is right."""
    from sn40l_emu.collectives.api import all_reduce
    from sn40l_emu.p2p.inproc import make_inproc_transports, run_group

    params = PROFILE.p2p.params()
    ts = make_inproc_transports(GROUP, params, n_sockets=4)
    for t in ts.values():
        t.rendezvous = None  # frames, as between socket actors (no batched in-process meeting)
    data = {i: np.full(ELEMS, i + 1, dtype=np.float32) for i in GROUP}
    run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params,
              transports=ts)  # sequence numbers move on
    queued = _queue(ts, _frames_of_a_ring_all_reduce(), dead=3)
    assert sum(t.drop_in_flight("recovering", 0) for t in ts.values()) == queued
    out = run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params,
                    transports=ts)
    fresh = run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params)
    for (res, end), (_, end0) in zip(out, fresh, strict=True):
        assert np.all(res == 10.0) and end == end0


def test_an_injected_kill_reports_the_flush_in_its_event_note() -> None:
    from sn40l_emu import events
    from sn40l_emu.inject import InjectionPlan

    plan = InjectionPlan("sn40l", backend="local")
    plan.schedule(events.KillSocket(5, mode="virtual"), after_requests=2)
    rep = plan.run_coe(model="tiny-llama", experts=6, batch=2, tokens=2, prompt_len=4, batches=3,
                       workload="uniform")
    assert rep.submitted == rep.completed + rep.failed
    # a virtual kill stops the step inside the model (every socket ends it): nothing is left queued
    assert "0 in-flight frame(s) dropped on the survivors" in rep.events[0].note
