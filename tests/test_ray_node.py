"""Tier 2: socket actors on a local Ray (session fixture) give the in-process nanoseconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sn40l_emu import units
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.errors import OutOfMemory, SocketDeadError
from sn40l_emu.program import (
    AllocOp,
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
