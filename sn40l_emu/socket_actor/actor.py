"""The Ray actor of one socket: a thin async shell around :class:`SocketModel`.

The actor is asynchronous so that a peer's ``deliver`` can land in the mailbox
while ``run_program`` awaits a receive: one event loop, no threads, no locks.
Everything that decides time lives in the pure models it holds.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import ray

from sn40l_emu.config import NodeProfile
from sn40l_emu.socket_actor.program import Program, Tier
from sn40l_emu.socket_actor.socket_model import ProgramResult, SocketModel
from sn40l_emu.socket_actor.state_changes import StateChange, apply_change


class SocketActorImpl:
    """Plain class (testable without Ray); ``SocketActor`` is its Ray actor form."""

    def __init__(self, index: int, profile: NodeProfile, n_sockets: int, trace: bool = True) -> None:
        self.index = index
        self.profile = profile
        self.n_sockets = n_sockets
        self.trace = trace
        self.peers: dict[int, Any] = {}
        self.transport: Any = None
        self._fresh_state()

    def _fresh_state(self) -> None:
        from sn40l_emu.p2p.mailbox import Mailbox
        from sn40l_emu.p2p.network import NetworkView
        from sn40l_emu.p2p.topology import make_topology

        self.model = SocketModel(self.index, self.profile, trace=self.trace)
        self.mailbox = Mailbox(self.index)
        params = self.profile.p2p.params()
        self.network = NetworkView(self.index, make_topology(params.topology, self.n_sockets), params)

    async def reset(self) -> int:
        """Power-cycle the socket: clock 0, empty tiers and store, idle links (the process stays)."""
        self._fresh_state()
        if self.peers:
            await self.connect(self.peers)
        return os.getpid()

    async def connect(self, peers: dict[int, Any]) -> int:
        """Learn the peers' actor handles; returns this actor's pid."""
        from sn40l_emu.p2p.ray_transport import RayTransport

        self.peers = dict(peers)
        p = self.model.profile.p2p
        self.transport = RayTransport(self.model.index, peers, self.mailbox, self.network,
                                      p.max_frame_bytes, p.timeout_s)
        return os.getpid()

    async def deliver(self, header: bytes, payload: np.ndarray | None) -> None:
        """A peer's frame: validated (never unpickled), then queued by (src, tag, seq)."""
        from sn40l_emu.p2p.delivery import handle_delivery

        handle_delivery(self.mailbox, header, payload, self.model.profile.p2p.max_frame_bytes)

    async def run_program(self, program: Program) -> ProgramResult:
        return await self.model.run_program(program, self.transport)

    async def status(self) -> dict[str, Any]:
        st = self.model.status()
        st["pid"] = os.getpid()
        st["ray_node"] = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return st

    async def load_tensors(self, tensors: dict[str, np.ndarray]) -> int:
        """Functional mode: place real tensors in the socket's store (weights, inputs)."""
        for name, arr in tensors.items():
            self.model.store[name] = np.array(arr, copy=True)
        return len(tensors)

    async def get_tensors(self, names: list[str]) -> dict[str, np.ndarray]:
        return {n: self.model.tensor(n) for n in names}

    async def drop_tensors(self, prefix: str) -> int:
        names = [n for n in self.model.store if n.startswith(prefix)]
        for n in names:
            del self.model.store[n]
        return len(names)

    async def alloc(self, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        self.model.memory[Tier(tier)].alloc(name, size_bytes, read_only=read_only)

    async def free(self, tier: str, name: str) -> None:
        self.model.memory[Tier(tier)].free(name)

    async def clock_ns(self) -> int:
        return self.model.clock.now_ns

    async def advance_to(self, t_ns: int) -> int:
        return self.model.clock.advance_to(t_ns)


    async def apply_change(self, change: StateChange) -> int:
        """Apply an injected change (a typed :class:`StateChange`) to this socket's models."""
        apply_change(self.model, self.network, change)
        return self.model.clock.now_ns

    async def ping(self) -> int:
        return os.getpid()


SocketActor = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(SocketActorImpl)
