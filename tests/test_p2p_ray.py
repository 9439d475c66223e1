"""Tier 2: the Ray transport between actors gives the in-process numbers and nanoseconds.

A tiny async test actor hosts a Mailbox + RayTransport (the real socket actor
does the same); actors are created once per module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from sn40l_emu.collectives import all_reduce
from sn40l_emu.errors import FrameError, P2PTimeoutError, SocketDeadError
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.p2p.inproc import run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import Algo
from sn40l_emu.units import GB

pytestmark = pytest.mark.ray

PARAMS = P2PParams(
    TopologyKind.FULL_MESH,
    LinkParams(50 * GB, 1_000),
    100,
    1 << 30,
    0,
    60.0,  # wall-clock wait for a frame: generous, so a loaded machine never times out a live peer
    LinkParams(25 * GB, 5_000),
)
GROUP = tuple(range(8))


def _peer_socket_class(**options: Any) -> Any:
    """The test actor, built in a function so Ray pickles it by value (tests/ is no package)."""
    import ray

    from sn40l_emu.collectives import all_reduce as coll_all_reduce
    from sn40l_emu.fabric.network import NetworkView
    from sn40l_emu.fabric.topology import make_topology
    from sn40l_emu.p2p.delivery import handle_delivery
    from sn40l_emu.p2p.mailbox import Mailbox
    from sn40l_emu.p2p.ray_transport import RayTransport

    @ray.remote(num_cpus=0, **options)
    class PeerSocket:
        def __init__(self, rank: int, params: P2PParams, n_sockets: int) -> None:
            self.params = params
            self.mailbox = Mailbox(rank)
            self.network = NetworkView(rank, make_topology(params.topology, n_sockets), params)
            self.rank = rank
            self.transport: RayTransport | None = None

        async def connect(self, peers: dict[int, Any]) -> int:
            self.transport = RayTransport(
                self.rank,
                peers,
                self.mailbox,
                self.network,
                self.params.max_frame_bytes,
                self.params.timeout_s,
            )
            return self.rank

        async def deliver(self, header: bytes, payload: np.ndarray | None) -> None:
            handle_delivery(self.mailbox, header, payload, self.params.max_frame_bytes)

        async def all_reduce(
            self,
            group: tuple[int, ...],
            data: Tensor,
            start_ns: int,
            algo: Algo,
            chunks: int,
            tag: int,
        ) -> tuple[Tensor, int]:
            assert self.transport is not None
            return await coll_all_reduce(
                self.transport, group, data, start_ns, algo=algo, chunks=chunks, tag=tag
            )

        async def waiting_frames(self) -> int:
            return len(self.mailbox)

    return PeerSocket


def _connect(actors: dict[int, Any]) -> None:
    import ray

    ray.get([a.connect.remote(actors) for a in actors.values()])


@pytest.fixture(scope="module")
def actors(ray_session: None) -> Iterator[dict[int, Any]]:
    import ray

    cls = _peer_socket_class()
    handles = {r: cls.remote(r, PARAMS, 8) for r in GROUP}
    _connect(handles)
    yield handles
    for h in handles.values():
        ray.kill(h)


def _start_ns(tag: int) -> int:
    """The module's actors keep their link state between tests: each test starts far later
    (one virtual second per tag), when every link is idle again, so a fresh in-process run
    is the exact reference."""
    return tag * 10**9


def _remote_all_reduce(
    actors: dict[int, Any],
    group: tuple[int, ...],
    data: dict[int, Tensor],
    algo: Algo,
    chunks: int,
    tag: int,
) -> list[tuple[Tensor, int]]:
    import ray

    start = _start_ns(tag)
    refs = [actors[r].all_reduce.remote(group, data[r], start, algo, chunks, tag) for r in group]
    return list(ray.get(refs))


def _local_all_reduce(
    group: tuple[int, ...], data: dict[int, Tensor], algo: Algo, chunks: int, tag: int
) -> list[tuple[Tensor, int]]:
    async def body(t: Transport) -> tuple[Tensor, int]:
        return await all_reduce(t, group, data[t.rank], _start_ns(tag), algo=algo, chunks=chunks)

    return run_group(group, body, PARAMS)


@pytest.mark.parametrize(
    ("algo", "chunks", "group", "dtype"),
    [
        (Algo.RING, 4, GROUP, np.float32),
        (Algo.ONESHOT, 1, GROUP, ml_dtypes.bfloat16),
        (Algo.TREE, 2, (4, 5, 6, 7), np.float16),
    ],
)
def test_ray_matches_in_process(
    actors: dict[int, Any], algo: Algo, chunks: int, group: tuple[int, ...], dtype: type
) -> None:
    rng = np.random.default_rng(7)
    data: dict[int, Tensor] = {r: rng.standard_normal(40_000).astype(dtype) for r in group}
    tag = list(Algo).index(algo) + 10
    remote = _remote_all_reduce(actors, group, data, algo, chunks, tag)
    local = _local_all_reduce(group, data, algo, chunks, tag)
    for (r_res, r_end), (l_res, l_end) in zip(remote, local, strict=True):
        assert r_end == l_end
        assert isinstance(r_res, np.ndarray) and r_res.tobytes() == l_res.tobytes()  # type: ignore[union-attr]


def test_ray_rank_tagged_and_symbolic(actors: dict[int, Any]) -> None:
    tagged: dict[int, Tensor] = {r: np.full(1000, r + 1, np.float32) for r in GROUP}
    out = _remote_all_reduce(actors, GROUP, tagged, Algo.RING, 3, tag=20)
    assert all(np.array_equal(res, np.full(1000, 36.0)) for res, _ in out)  # type: ignore[arg-type]
    sym: dict[int, Tensor] = {r: SymbolicTensor((1 << 24,), "bfloat16") for r in GROUP}
    sym_out = _remote_all_reduce(actors, GROUP, sym, Algo.RING, 8, tag=21)
    local = _local_all_reduce(GROUP, sym, Algo.RING, 8, 21)
    assert [e for _, e in sym_out] == [e for _, e in local]
    assert sym_out[0][0] == SymbolicTensor((1 << 24,), "bfloat16")


def test_corrupt_frame_is_refused_and_the_actor_keeps_serving(actors: dict[int, Any]) -> None:
    import ray

    with pytest.raises(FrameError):
        ray.get(actors[3].deliver.remote(b"\x93\x01", None))
    with pytest.raises(FrameError, match="payload dtype"):
        from sn40l_emu.p2p.frame import encode_frame

        header, _ = encode_frame(0, 3, 99, 0, np.zeros(4, np.float32), np.array([1]))
        ray.get(actors[3].deliver.remote(header, np.zeros(4, np.int32)))
    assert ray.get(actors[3].waiting_frames.remote()) == 0
    tagged: dict[int, Tensor] = {r: np.full(16, r + 1, np.int64) for r in GROUP}
    out = _remote_all_reduce(actors, GROUP, tagged, Algo.ONESHOT, 1, tag=30)
    assert all(np.array_equal(res, np.full(16, 36)) for res, _ in out)  # type: ignore[arg-type]


def test_dead_peer_surfaces_as_socket_dead_error(ray_session: None) -> None:
    import ray

    patient = P2PParams(PARAMS.topology, PARAMS.link, 100, 1 << 20, 0, 60.0, PARAMS.scale_out)
    cls = _peer_socket_class()
    pair = {r: cls.remote(r, patient, 8) for r in (0, 1)}
    _connect(pair)
    ray.kill(pair[1])
    with pytest.raises(SocketDeadError) as info:
        ray.get(pair[0].all_reduce.remote((0, 1), np.ones(4, np.float32), 0, Algo.ONESHOT, 1, 0))
    assert info.value.socket == 1
    assert not isinstance(info.value, P2PTimeoutError)  # the failed delivery, not the 60 s receive timeout
    ray.kill(pair[0])
