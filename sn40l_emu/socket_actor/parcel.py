"""A program packed once on the driver for all the socket actors it goes to.

Why: Ray serialises every argument of every actor call with cloudpickle, whose
per-object hook runs in Python; a TP program is usually one object handed to
all eight sockets, so the driver packed the same program eight times per step
(about 0.8 ms for a 150-op composition load, against 0.2 ms for the C pickler
once). Packed once, each call carries the same bytes, which Ray copies as they
are. The actor opens it back into the :class:`~sn40l_emu.program.Program`.

This is the driver's own program going to its own actors over Ray's channel,
which unpickles every call's arguments anyway; P2P frames between sockets never
travel this way and are never unpickled (:mod:`sn40l_emu.p2p.frame`).
"""

from __future__ import annotations

import pickle

from sn40l_emu.program import KernelOp, Program


class ProgramParcel:
    """The pickled bytes of one :class:`Program` (see the module doc)."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[type[ProgramParcel], tuple[bytes]]:
        return (ProgramParcel, (self.blob,))

    def open(self) -> Program:
        program = pickle.loads(self.blob)  # the driver's own Program (module doc)
        if not isinstance(program, Program):
            raise TypeError(f"a program parcel holds a {type(program).__name__}, not a Program")
        return program


def pack(program: Program) -> Program | ProgramParcel:
    """``program`` packed once; a functional program as it is (its kernels' Python functions
    may live where only cloudpickle finds them, e.g. a driver script's ``__main__``), and
    anything else the C pickler refuses."""
    if any(isinstance(op, KernelOp) and op.fn is not None for op in program.ops):
        return program
    try:
        return ProgramParcel(pickle.dumps(program, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, AttributeError, TypeError):
        return program


def unpack(program: Program | ProgramParcel) -> Program:
    """The program an actor call carried, packed or not."""
    return program.open() if isinstance(program, ProgramParcel) else program
