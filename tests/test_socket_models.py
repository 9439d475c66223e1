"""Tier 1: memory tiers, DMA engines, tile timing, clock — exact integers, no Ray."""

from __future__ import annotations

import asyncio

import pytest

from sn40l_emu import units
from sn40l_emu.config import load_profile
from sn40l_emu.errors import OutOfMemory
from sn40l_emu.program import (
    AllocOp,
    CopyOp,
    DmaFenceOp,
    KernelOp,
    Launch,
    MemStream,
    Program,
    Stage,
    StreamKind,
    Tier,
)
from sn40l_emu.socket_actor.dma import Engine, FifoEngine
from sn40l_emu.socket_actor.socket_model import SocketModel
from sn40l_emu.socket_actor.tile import Degradation, kernel_cost, share_units

PROFILE = load_profile("sn40l")


def run(model: SocketModel, ops: list) -> int:
    res = asyncio.run(model.run_program(Program.of("t", ops)))
    assert sum(res.breakdown_ns.values()) == res.duration_ns
    return res.duration_ns


def test_ddr_to_hbm_copy_of_1gib_takes_the_profile_rate() -> None:
    m = SocketModel(0, PROFILE)
    m.memory[Tier.DDR].alloc("w", units.GiB, read_only=True)
    dur = run(m, [CopyOp("in", Tier.DDR, Tier.HBM, units.GiB, segment="w")])
    assert dur == units.transfer_ns(units.GiB, PROFILE.dma.ddr_hbm_bw_bytes_per_s)
    assert dur == 8_589_935  # 2**30 B / 125e9 B/s, rounded up
    assert "w" in m.memory[Tier.HBM] and "w" in m.memory[Tier.DDR]  # read-only: source stays


def test_two_concurrent_copies_on_one_engine_finish_twice_as_late() -> None:
    one = SocketModel(0, PROFILE)
    t1 = run(one, [CopyOp("a", Tier.DDR, Tier.HBM, units.GiB, blocking=False), DmaFenceOp()])
    two = SocketModel(0, PROFILE)
    t2 = run(two, [CopyOp("a", Tier.DDR, Tier.HBM, units.GiB, blocking=False),
                   CopyOp("b", Tier.DDR, Tier.HBM, units.GiB, blocking=False), DmaFenceOp()])
    assert t2 == 2 * t1


def test_copies_on_different_engines_overlap() -> None:
    m = SocketModel(0, PROFILE)
    t = run(m, [CopyOp("a", Tier.DDR, Tier.HBM, units.GiB, blocking=False),
                CopyOp("b", Tier.HBM, Tier.SRAM, units.MiB, blocking=False), DmaFenceOp()])
    assert t == units.transfer_ns(units.GiB, PROFILE.dma.ddr_hbm_bw_bytes_per_s)


def test_hbm_overflow_raises_with_numbers() -> None:
    m = SocketModel(0, PROFILE)
    m.memory[Tier.HBM].alloc("a", 60 * units.GiB)
    with pytest.raises(OutOfMemory) as err:
        run(m, [AllocOp("b", Tier.HBM, 8 * units.GiB)])
    e = err.value
    assert e.tier == "hbm" and e.requested_bytes == 8 * units.GiB and e.free_bytes == 4 * units.GiB
    assert str(8 * units.GiB) in str(e) and str(4 * units.GiB) in str(e)


def test_engine_rate_change_applies_from_its_time() -> None:
    e = FifoEngine("x", 100 * units.GB)
    e.set_bw(25 * units.GB, from_ns=1_000)
    assert e.serve(0, 100_000).end_ns == 1_000
    assert e.serve(1_000, 100_000).end_ns == 1_000 + 4_000


def test_share_units_proportional_and_deterministic() -> None:
    assert share_units([1, 3], 8) == [2, 6]
    assert sum(share_units([5, 7, 11], 936)) == 936
    assert share_units([0, 4], 10) == [0, 10]


def _kernel(flops: int, hbm_bytes: int, launch: Launch = Launch.HO, sram: int = 0) -> KernelOp:
    return KernelOp("k", (Stage("s", flops, sram),),
                    (MemStream(Tier.HBM, hbm_bytes, StreamKind.WEIGHTS),), launch, True)


def test_memory_bound_kernel_streams_at_85_percent_of_hbm() -> None:
    p = PROFILE
    c = kernel_cost(_kernel(1000, 10**9), p.socket, p.tile, p.launch, 1)
    assert c.bound == "hbm"
    assert c.total_ns == units.transfer_ns(10**9, int(1.8e12 * 0.85))
    assert c.attribution_ns["weights"] == c.total_ns


def test_compute_bound_kernel_uses_occupied_pcus() -> None:
    p = PROFILE
    c = kernel_cost(_kernel(10**12, 1000), p.socket, p.tile, p.launch, 1)
    assert c.bound == "compute"
    per_pcu = 638 * 10**12 // 1040
    assert c.compute_ns == units.transfer_ns(10**12, per_pcu * 936)


def test_launch_costs_by_kind_and_straggler() -> None:
    p = PROFILE
    so = kernel_cost(_kernel(1000, 1000, Launch.SO), p.socket, p.tile, p.launch, 1)
    ho = kernel_cost(_kernel(1000, 1000, Launch.HO), p.socket, p.tile, p.launch, 1)
    assert so.total_ns - ho.total_ns == p.launch.so_call_ns
    slow = kernel_cost(_kernel(10**12, 1000), p.socket, p.tile, p.launch, 1, Degradation(compute_factor=0.5))
    fast = kernel_cost(_kernel(10**12, 1000), p.socket, p.tile, p.launch, 1)
    assert abs(slow.compute_ns - 2 * fast.compute_ns) <= 2


def test_sram_overflow_spills_through_hbm() -> None:
    p = PROFILE
    fits = kernel_cost(_kernel(1000, 0, sram=100 * units.MiB), p.socket, p.tile, p.launch, 1)
    spills = kernel_cost(_kernel(1000, 0, sram=600 * units.MiB), p.socket, p.tile, p.launch, 1)
    assert fits.spill_bytes == 0 and spills.spill_bytes == 600 * units.MiB - int(520 * units.MiB * 0.9)
    assert spills.bound == "hbm"


def test_same_program_twice_same_nanoseconds() -> None:
    ops = [AllocOp("x", Tier.HBM, units.MiB), _kernel(10**9, 10**7, Launch.SO),
           CopyOp("c", Tier.HBM, Tier.SRAM, units.MiB), _kernel(10**10, 10**8)]
    a, b = SocketModel(0, PROFILE), SocketModel(0, PROFILE)
    ra = asyncio.run(a.run_program(Program.of("p", ops)))
    rb = asyncio.run(b.run_program(Program.of("p", ops)))
    assert (ra.end_ns, ra.breakdown_ns) == (rb.end_ns, rb.breakdown_ns)
    assert [(e.start_ns, e.dur_ns, e.name) for e in ra.events] == [(e.start_ns, e.dur_ns, e.name) for e in rb.events]


def test_engine_for_gpu_profile_uses_shared_host_link() -> None:
    gpu = load_profile("dgx-a100")
    m = SocketModel(0, gpu)
    assert m.dma.get(Engine.HOST_LINK).bw_at(0) == 32 * units.GB // 8
