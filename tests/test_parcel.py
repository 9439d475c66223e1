"""Programs packed once on the driver for every socket actor (socket_actor/parcel.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sn40l_emu import units
from sn40l_emu.cluster.ray_node import _pack_once
from sn40l_emu.program import AllocOp, CopyOp, KernelOp, Launch, MemStream, Program, Stage, StreamKind, Tier
from sn40l_emu.socket_actor.parcel import ProgramParcel, pack, unpack


def _load(n: int) -> Program:
    ops = [AllocOp(f"expert{e}", Tier.DDR, units.MiB, read_only=True) for e in range(n)]
    return Program.of("load", [*ops, CopyOp("in", Tier.HOST, Tier.DDR, n * units.MiB, blocking=False)])


def test_a_parcel_opens_into_an_equal_program_and_travels_as_its_bytes() -> None:
    prog = _load(20)
    parcel = pack(prog)
    assert isinstance(parcel, ProgramParcel)
    again = pickle.loads(pickle.dumps(parcel))  # as Ray carries it
    assert unpack(again) == prog and unpack(prog) is prog


def test_equal_programs_for_eight_sockets_are_packed_once() -> None:
    progs = {s: _load(30) for s in range(8)}  # equal, not the same object (a composition load)
    packed = _pack_once(progs)
    assert len({id(p) for p in packed.values()}) == 1
    other = _pack_once({0: _load(30), 1: _load(31)})
    assert unpack(other[0]) != unpack(other[1])


def test_a_functional_kernel_goes_as_it_is() -> None:
    def double(x: np.ndarray) -> np.ndarray:  # a local function: only cloudpickle carries it
        return x * 2

    op = KernelOp("k", (Stage("s", 10, 1),), (MemStream(Tier.HBM, 1, StreamKind.WEIGHTS),), Launch.SO, True,
                  fn=double)
    prog = Program.of("f", [op])
    assert pack(prog) is prog


def test_a_parcel_holding_anything_else_is_refused() -> None:
    with pytest.raises(TypeError):
        ProgramParcel(pickle.dumps({"not": "a program"})).open()
