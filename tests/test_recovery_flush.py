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


def _dies_mid_collective(t: Any, socket: int) -> Any:
    """Socket ``socket``'s process dies in the second ring step, at its second receive (its
    ring successor then holds a frame it has not taken); returns the original receive."""
    original, done = t.recv, [0]

    async def recv(src: int, tag: int) -> Any:
        if done[0] >= 1:
            raise SocketDeadError(socket, "process killed mid-collective")
        done[0] += 1
        return await original(src, tag)

    t.recv = recv
    return original


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


def test_a_death_mid_collective_leaves_frames_that_recovery_drops_and_reports() -> None:
    node = LocalNode(PROFILE, len(GROUP))
    _dies_mid_collective(node.transports[3], 3)
    with pytest.raises(SocketDeadError):
        _all_reduce(node)
    queued = sum(len(node.transports[i].mailbox) for i in GROUP if i != 3)
    assert queued > 0  # the cut-short collective left frames on the survivors
    node.kill(3)
    assert node.recover() == [3]
    report = node.last_recovery
    assert report.recreated == (3,) and report.dropped_frames == queued
    assert f"{queued} queued frame(s) dropped" in str(report)
    assert all(len(node.transports[i].mailbox) == 0 for i in GROUP)

    after = _all_reduce(node)
    assert all(float(node.get_tensors(i, ["x"])["x"][0]) == 10.0 for i in GROUP)
    clean = _all_reduce(LocalNode(PROFILE, len(GROUP)))
    assert [r.breakdown_ns["collectives"] for r in after.values()] == \
        [r.breakdown_ns["collectives"] for r in clean.values()]


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
    alive = _dies_mid_collective(ts[3], 3)
    with pytest.raises(SocketDeadError):
        run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params,
                  transports=ts)
    queued = sum(len(t.mailbox) for t in ts.values())
    assert queued > 0
    ts[3].recv = alive  # type: ignore[method-assign]  # socket 3 recreated
    assert sum(t.drop_in_flight("recovering", 0) for t in ts.values()) == queued
    out = run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params,
                    transports=ts)
    fresh = run_group(GROUP, lambda t: all_reduce(t, GROUP, data[t.rank], 0, algo=Algo.RING, tag=5), params)
    for (res, end), (_, end0) in zip(out, fresh, strict=True):
        assert np.all(res == 10.0) and end == end0
