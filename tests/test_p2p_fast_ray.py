"""Tier 2: socket actors on one Ray node talk over the same-host fast path.

Same nanoseconds and numbers as the in-process node; a corrupt frame sent to
an actor's endpoint is refused with FrameError and the actor keeps serving;
reset keeps working; a killed peer fails a waiting receive at once (EOF on
its connection), not after the P2P timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.p2p.frame import encode_frame
from sn40l_emu.p2p.wire import codec as wire
from sn40l_emu.p2p.wire.endpoint import send_raw
from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp, Program, ReduceOp

pytestmark = pytest.mark.ray
PROFILE = load_profile("sn40l")
GROUP = tuple(range(8))


@pytest.fixture(scope="module")
def node(ray_session: None) -> Iterator[Any]:
    from sn40l_emu.cluster.ray_node import RayNode

    n = RayNode.create(PROFILE, trace=False)
    yield n
    n.close()


def _programs(count: int, algo: Algo, chunks: int, op: ReduceOp = ReduceOp.SUM) -> dict[int, Program]:
    ops = [CollectiveOp(f"ar{i}", CollectiveKind.ALL_REDUCE, GROUP, (count,), "float32", op=op, algo=algo,
                        chunks=chunks, buffer="x") for i in range(2)]
    return {s: Program.of("ar", ops) for s in GROUP}


def _inputs(count: int) -> dict[int, dict[str, np.ndarray]]:
    return {s: {"x": np.random.default_rng(s).standard_normal(count).astype(np.float32)} for s in GROUP}


def test_every_peer_is_on_the_fast_path(node: Any) -> None:
    import ray

    st = ray.get([a.p2p_status.remote() for a in node.actors])
    assert all(s["local_peers"] == [p for p in GROUP if p != s["socket"]] for s in st)


@pytest.mark.parametrize(("count", "algo", "chunks"), [(2048, Algo.AUTO, 0), (300_000, Algo.RING, 8)])
def test_same_ns_and_numbers_as_the_in_process_node(node: Any, count: int, algo: Algo, chunks: int) -> None:
    node.reset()
    local = LocalNode(PROFILE, trace=False)
    progs = _programs(count, algo, chunks)  # 300k floats: 150 KB ring frames, 1.2 MB one-shot
    for n in (node, local):
        n.load_tensors(_inputs(count))
    remote, ref = node.run_programs(progs), local.run_programs(progs)
    for s in GROUP:
        assert (remote[s].start_ns, remote[s].end_ns) == (ref[s].start_ns, ref[s].end_ns)
        assert node.get_tensors(s, ["x"])["x"].tobytes() == local.get_tensors(s, ["x"])["x"].tobytes()
    local.close()


def test_corrupt_frame_on_the_fast_path_is_refused_and_the_actor_keeps_serving(node: Any) -> None:
    import ray

    endpoint = ray.get(node.actors[3].listen.remote())
    with pytest.raises(FrameError, match="not a valid msgpack"):
        send_raw(endpoint.path, 0, wire.KIND_U32.pack(wire.Kind.FRAME, 2) + b"\x93\x01")
    header = msgpack.packb({"version": 1, "src": 0, "dst": 3, "tag": 99, "seq": 0, "dtype": "float32",
                            "shape": [5], "payload_bytes": 16, "symbolic": False, "chunks": 1, "arrive_ns": [1]})
    with pytest.raises(FrameError, match="payload_bytes"):
        send_raw(endpoint.path, 0, wire.frame_prefix(header) + bytes(16))  # shape says 20 B
    with pytest.raises(FrameError, match="from socket 2 on socket 0"):
        good, flat = encode_frame(2, 3, 99, 0, np.zeros(4, np.float32), np.array([1]))
        send_raw(endpoint.path, 0, wire.frame_prefix(good) + flat.tobytes())  # type: ignore[union-attr]
    assert ray.get(node.actors[3].p2p_status.remote())["rejected_frames"] >= 1
    node.load_tensors({s: {"x": np.full(64, s + 1, np.float32)} for s in GROUP})
    node.run_programs(_programs(64, Algo.ONESHOT, 1, ReduceOp.MAX))
    assert all(np.array_equal(node.get_tensors(s, ["x"])["x"], np.full(64, 8.0)) for s in GROUP)


def test_reset_reconnects_the_fast_path(node: Any) -> None:
    node.reset()
    node.load_tensors({s: {"x": np.full(1000, s + 1, np.float32)} for s in GROUP})
    res = node.run_programs(_programs(1000, Algo.RING, 2))
    assert all(r.start_ns == 0 for r in res.values())
    assert np.array_equal(node.get_tensors(5, ["x"])["x"], np.full(1000, 36.0 * 8))  # two all-reduces


def test_killed_peer_fails_a_waiting_receive_at_once(ray_session: None) -> None:
    import ray

    from sn40l_emu.cluster.ray_node import RayNode

    pair = RayNode.create(PROFILE, n_sockets=2, trace=False)
    try:
        op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, (0, 1), (16,), "float32", algo=Algo.ONESHOT, chunks=1)
        waiting = pair.actors[0].run_program.remote(Program.of("ar", [op]))  # socket 1 never joins
        time.sleep(0.5)
        ray.kill(pair.actors[1], no_restart=True)
        with pytest.raises(SocketDeadError) as info:
            pair._get([waiting], 60)
        assert info.value.socket == 1
        # EOF on its connection, not the receive timeout (P2PTimeoutError) nor the 60 s get timeout
        assert not isinstance(info.value, P2PTimeoutError) and "no answer in time" not in str(info.value)
    finally:
        pair.close()
