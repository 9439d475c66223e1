"""Node handles: the emulated node as the layers above see it.

The node alone owns virtual time: nothing above it keeps copies of the
sockets' clocks. Its contract is small (:class:`Node`): run programs, read the
clocks, move clocks forward (a barrier, or a result computed elsewhere and
applied here), apply a state change. Every change of timing state moves
``version``, so a cost measured on the node is valid exactly while ``version``
is the same; callers key caches by it and never have to invalidate anything.
Administration (:class:`NodeAdmin`: power-cycle, faults, recovery) and real
tensors (:class:`TensorNode`) are separate, optional parts.

Two implementations of all three: :class:`~sn40l_emu.cluster.ray_node.RayNode`
(one Ray actor per socket: the distributed emulator) and :class:`LocalNode`
(the same socket models in this process with the in-process transport: exact
timing for tests and for the reference runs). Same programs, same nanoseconds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import SocketDeadError
from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.program import Program
from sn40l_emu.socket_actor.socket_model import ProgramResult, SocketModel, gather_outcomes, settle
from sn40l_emu.socket_actor.state_changes import StateChange, apply_change
from sn40l_emu.socket_actor.tile import Degradation


@runtime_checkable
class Node(Protocol):
    """An emulated node of ``n_sockets`` sockets built from ``profile``: programs, clocks, changes."""

    profile: NodeProfile
    n_sockets: int

    @property
    def version(self) -> int:
        """The node's timing state: equal versions, equal costs (same history since the last reset)."""
        ...

    def run_programs(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        """Run one program per listed socket concurrently; collectives meet over P2P."""
        ...

    def clocks(self) -> list[int]:
        """Every socket's virtual clock (ns)."""
        ...

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        """Move each listed socket's clock to at least its target (a barrier, or a reused result)."""
        ...

    def apply_change(self, sockets: list[int], change: StateChange) -> None:
        """Apply an injected change to the listed sockets (moves ``version``)."""
        ...

    def degradation(self, socket: int) -> Degradation:
        """The socket's injected slow-downs (the node sees every change it applies)."""
        ...


@runtime_checkable
class LinkStateNode(Protocol):
    """Optional: the links' FIFO state, so that cost reuse can repeat runs that leave links busy.

    Why: a run that ends with frames still on a link (a degraded link drains after
    its sender moved on) changes how the next run goes; a reused copy of it must
    leave the same state behind, and may only be reused where it starts in the same
    state (engine/reuse.py).
    """

    def busy_links(self, sockets: list[int]) -> dict[int, BusyLinks] | None:
        """Per socket, the links of its view busy after its clock; None when the node cannot tell."""
        ...

    def occupy_links(self, targets: Mapping[int, BusyLinks]) -> None:
        """Each listed link busy until at least its time (a reused run's traffic, no frames sent)."""
        ...


@runtime_checkable
class MessageMarks(Protocol):
    """Optional: turn the trace's per-message marks off and on (the spans of every op stay).

    Why: marking each P2P message sends every traced collective down the frame path,
    one message at a time; a fault injector needs that detail only while a timed
    fault lies ahead (inject/driver.py), and the batched path gives the same nanoseconds.
    """

    def set_message_marks(self, on: bool) -> None:
        ...


@runtime_checkable
class NodeAdmin(Protocol):
    """Optional: power-cycle, faults and recovery, status, release."""

    def reset(self) -> None:
        """Power-cycle every socket (clock 0, empty memory, idle links); ``version`` back to 0."""
        ...

    def kill(self, socket: int, *, process: bool = False) -> None:
        """Fault: socket ``socket`` dies (``process``: its OS process is really killed)."""
        ...

    def recover(self) -> list[int]:
        """Bring dead sockets back (fresh: clock 0, empty memory); returns their indices."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """Per socket: index, ray node, clock and tier usage."""
        ...

    def close(self) -> None:
        """Release what this handle created (not a Ray it merely joined)."""
        ...


@runtime_checkable
class TensorNode(Protocol):
    """Optional: functional mode's real tensors in the sockets' stores."""

    def load_tensors(self, per_socket: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        ...

    def get_tensors(self, socket: int, names: list[str]) -> dict[str, np.ndarray]:
        ...


class ManagedNode(Node, NodeAdmin, TensorNode, Protocol):
    """All three parts: what :func:`~sn40l_emu.cluster.session.open_node` hands out."""


_FRESH = itertools.count(1)


class Versions:
    """Numbers a node's timing states: one small int per distinct history since the last reset.

    A power-cycled node is version 0 again, and the same changes applied in
    the same order after a reset give the same version as before it, so costs
    measured in one sweep row stay valid in the next; a different history
    never shares a number (a plain counter reset to 0 would).
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[Hashable, ...], int] = {(): 0}
        self._history: tuple[Hashable, ...] = ()
        self.version = 0

    def reset(self) -> None:
        self._history = ()
        self.version = 0

    def bump(self, what: Hashable) -> int:
        """A state change: ``what`` describes it (a frozen change, ("kill", socket), ...)."""
        self._history = (*self._history, what)
        self.version = self._ids.setdefault(self._history, len(self._ids))
        return self.version

    def fresh(self) -> int:
        """A state nobody can name again (a change described only by "something happened")."""
        return self.bump(("fresh", next(_FRESH)))


class LocalNode(ManagedNode):
    """All sockets in this process; collectives over the in-process transport."""

    def __init__(self, profile: NodeProfile, n_sockets: int | None = None, *, trace: bool = True) -> None:
        self.profile = profile
        self.n_sockets = n_sockets or profile.sockets
        self.trace = trace
        self.message_marks = True
        self._loop = asyncio.new_event_loop()
        self._versions = Versions()
        self.dead: set[int] = set()
        self.models: list[SocketModel] = []
        self.transports: dict[int, Any] = {}
        self.last_recovery: Any = None  # the RecoveryReport of the latest recover()
        self.reset()

    @property
    def version(self) -> int:
        return self._versions.version

    @version.setter
    def version(self, _value: int) -> None:
        """Someone changed the node behind its back: a state no cost cache has seen."""
        self._versions.fresh()

    def kill(self, socket: int, *, process: bool = False) -> None:
        """In-process sockets have no process of their own: a kill is a virtual death."""
        self.dead.add(socket)
        self._versions.bump(("kill", socket))

    def recover(self) -> list[int]:
        """Power-cycle the dead sockets in place; the report is kept in ``last_recovery``.

        Nothing in flight survives a socket's death: the survivors' queued frames
        (of a collective the death cut short) are dropped and counted, and every
        socket gets fresh links and mailboxes, as after a Ray node's recovery.
        """
        from sn40l_emu.cluster.recovery import RecoveryReport
        from sn40l_emu.p2p.inproc import make_inproc_transports

        back = sorted(self.dead)
        for i in back:
            self.models[i] = self._model(i)
        dropped = 0
        if back:
            why = f"sockets {back} were lost; the node is being recovered"
            dropped = sum(t.drop_in_flight(why, self.models[i].clock.now_ns)
                          for i, t in self.transports.items() if i not in self.dead)
            old = self.transports
            self.transports = make_inproc_transports(range(self.n_sockets), self.profile.p2p.params(),
                                                     n_sockets=self.n_sockets)
            for i, t in self.transports.items():  # keep the survivors' injected link state
                if i not in self.dead:
                    t.network = old[i].network
            self.dead.clear()
            self._versions.bump(("recover", tuple(back)))
        self.last_recovery = RecoveryReport(tuple(back), dict.fromkeys(back, "local"), 0, dropped)
        return back

    def reset(self) -> None:
        from sn40l_emu.p2p.inproc import make_inproc_transports

        self.dead = set()
        self._versions.reset()
        self.models = [self._model(i) for i in range(self.n_sockets)]
        self.transports = make_inproc_transports(range(self.n_sockets), self.profile.p2p.params(),
                                                 n_sockets=self.n_sockets)

    def run_programs(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        dead = sorted(set(programs) & self.dead)
        if dead:
            raise SocketDeadError(dead[0], "killed (virtual fault)")

        coros = [self.models[i].run_program(p, self.transports[i]) for i, p in programs.items()]
        return settle(self._loop.run_until_complete(gather_outcomes(coros)))

    def status(self) -> list[dict[str, Any]]:
        return [{**m.status(), "ray_node": "local"} for m in self.models]

    def load_tensors(self, per_socket: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        for i, tensors in per_socket.items():
            for name, arr in tensors.items():
                self.models[i].store[name] = np.array(arr, copy=True)

    def get_tensors(self, socket: int, names: list[str]) -> dict[str, np.ndarray]:
        return {n: self.models[socket].tensor(n) for n in names}

    def apply_change(self, sockets: list[int], change: StateChange) -> None:
        for i in sockets:
            apply_change(self.models[i], self.transports[i].network, change)
        self._versions.bump((tuple(sockets), change))

    def clocks(self) -> list[int]:
        return [m.clock.now_ns for m in self.models]

    def busy_links(self, sockets: list[int]) -> dict[int, BusyLinks]:
        return {s: self.transports[s].network.busy_after(self.models[s].clock.now_ns) for s in sockets}

    def occupy_links(self, targets: Mapping[int, BusyLinks]) -> None:
        for s, busy in targets.items():
            self.transports[s].network.occupy(busy)

    def _model(self, socket: int) -> SocketModel:
        """A fresh socket (power-cycle or recovery) with this node's trace settings."""
        model = SocketModel(socket, self.profile, trace=self.trace)
        model.message_marks = self.message_marks
        return model

    def set_message_marks(self, on: bool) -> None:
        """Whether traced programs mark every P2P message (see :class:`MessageMarks`)."""
        self.message_marks = on
        for m in self.models:
            m.message_marks = on

    def degradation(self, socket: int) -> Degradation:
        return self.models[socket].degradation

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        for s, t in targets.items():
            self.models[s].clock.advance_to(t)

    def advance_to(self, sockets: list[int], t_ns: int) -> None:
        self.advance_clocks(dict.fromkeys(sockets, t_ns))

    def alloc(self, socket: int, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        from sn40l_emu.program import Tier

        self.models[socket].memory[Tier(tier)].alloc(name, size_bytes, read_only=read_only)

    def free(self, socket: int, tier: str, name: str) -> None:
        from sn40l_emu.program import Tier

        self.models[socket].memory[Tier(tier)].free(name)

    def close(self) -> None:
        self._loop.close()

