"""Node handles: the emulated node as the layers above see it.

Two implementations with one interface: :class:`RayNode` (one Ray actor per
socket: the distributed emulator) and :class:`LocalNode` (the same socket
models in this process with the in-process transport: exact timing for tests
and for the reference runs). Same programs, same nanoseconds.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import EmuError, SocketDeadError
from sn40l_emu.program import Program
from sn40l_emu.socket_actor.socket_model import ProgramResult, SocketModel, gather_outcomes, settle
from sn40l_emu.socket_actor.state_changes import StateChange, apply_change
from sn40l_emu.socket_actor.tile import Degradation


class Node(ABC):
    """An emulated node of ``n_sockets`` sockets built from ``profile``."""

    profile: NodeProfile
    n_sockets: int
    version: int  # bumped by every state change: cached program costs are valid for one version

    @abstractmethod
    def run_programs(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        """Run one program per listed socket concurrently; collectives meet over P2P."""

    @abstractmethod
    def status(self) -> list[dict[str, Any]]:
        """Per socket: index, ray node, clock and tier usage."""

    @abstractmethod
    def load_tensors(self, per_socket: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        """Functional mode: put real tensors in sockets' stores."""

    @abstractmethod
    def get_tensors(self, socket: int, names: list[str]) -> dict[str, np.ndarray]:
        ...

    @abstractmethod
    def apply_change(self, sockets: list[int], change: StateChange) -> None:
        """Apply an injected change to the listed sockets (and bump ``version``)."""

    @abstractmethod
    def clocks(self) -> list[int]:
        ...

    @abstractmethod
    def degradation(self, socket: int) -> Degradation:
        """The socket's injected slow-downs (the node sees every change it applies)."""

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        """Move each listed socket's clock to at least its target (cost reuse, barriers)."""
        by_time: dict[int, list[int]] = {}
        for s, t in targets.items():
            by_time.setdefault(t, []).append(s)
        for t, sockets in sorted(by_time.items()):
            self.advance_to(sockets, t)

    @abstractmethod
    def advance_to(self, sockets: list[int], t_ns: int) -> None:
        ...

    @abstractmethod
    def alloc(self, socket: int, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        ...

    @abstractmethod
    def free(self, socket: int, tier: str, name: str) -> None:
        ...

    def kill(self, socket: int, *, process: bool = False) -> None:
        """Fault: socket ``socket`` dies (``process``: its OS process is really killed)."""
        raise EmuError(f"{type(self).__name__} cannot inject socket faults")

    def recover(self) -> list[int]:
        """Bring dead sockets back (fresh: clock 0, empty memory); returns their indices."""
        raise EmuError(f"{type(self).__name__} cannot recover sockets")

    @abstractmethod
    def reset(self) -> None:
        """Power-cycle every socket (clock 0, empty memory, idle links); ``version`` back to 0."""

    def close(self) -> None:  # noqa: B027 - optional hook: most nodes own nothing to release
        """Release what this handle created (not a Ray it merely joined)."""


class LocalNode(Node):
    """All sockets in this process; collectives over the in-process transport."""

    def __init__(self, profile: NodeProfile, n_sockets: int | None = None, *, trace: bool = True) -> None:
        self.profile = profile
        self.n_sockets = n_sockets or profile.sockets
        self.trace = trace
        self._loop = asyncio.new_event_loop()
        self.dead: set[int] = set()
        self.models: list[SocketModel] = []
        self.transports: dict[int, Any] = {}
        self.reset()

    def kill(self, socket: int, *, process: bool = False) -> None:
        """In-process sockets have no process of their own: a kill is a virtual death."""
        self.dead.add(socket)
        self.version += 1

    def recover(self) -> list[int]:
        from sn40l_emu.p2p.inproc import make_inproc_transports

        back = sorted(self.dead)
        for i in back:
            self.models[i] = SocketModel(i, self.profile, trace=self.trace)
        if back:  # fresh links and mailboxes: nothing in flight survives a socket's death
            old = self.transports
            self.transports = make_inproc_transports(range(self.n_sockets), self.profile.p2p.params(),
                                                     n_sockets=self.n_sockets)
            for i, t in self.transports.items():  # keep the survivors' injected link state
                if i not in self.dead:
                    t.network = old[i].network
            self.dead.clear()
            self.version += 1
        return back

    def reset(self) -> None:
        from sn40l_emu.p2p.inproc import make_inproc_transports

        self.dead = set()
        self.version = 0
        self.models = [SocketModel(i, self.profile, trace=self.trace) for i in range(self.n_sockets)]
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
        self.version += 1

    def clocks(self) -> list[int]:
        return [m.clock.now_ns for m in self.models]

    def degradation(self, socket: int) -> Degradation:
        return self.models[socket].degradation

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        for s, t in targets.items():
            self.models[s].clock.advance_to(t)

    def advance_to(self, sockets: list[int], t_ns: int) -> None:
        for i in sockets:
            self.models[i].clock.advance_to(t_ns)

    def alloc(self, socket: int, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        from sn40l_emu.program import Tier

        self.models[socket].memory[Tier(tier)].alloc(name, size_bytes, read_only=read_only)

    def free(self, socket: int, tier: str, name: str) -> None:
        from sn40l_emu.program import Tier

        self.models[socket].memory[Tier(tier)].free(name)

    def close(self) -> None:
        self._loop.close()
