"""The Ray actor of one socket: a thin async shell around :class:`SocketModel`.

The actor is asynchronous so that a peer's ``deliver`` can land in the mailbox
while ``run_program`` awaits a receive: one event loop, no threads, no locks.
Everything that decides time lives in the pure models it holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import EmuError
from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.program import Program, Tier
from sn40l_emu.socket_actor.parcel import ProgramParcel, unpack
from sn40l_emu.socket_actor.socket_model import ProgramResult, SocketModel
from sn40l_emu.socket_actor.state_changes import StateChange, apply_change

# a program the node answered itself, as it reaches the actor: (program, start_ns, power-cycle first,
# links busy, the end_ns it must reach)
Replayed = tuple[Program | ProgramParcel, int, bool, BusyLinks, int]


class SocketActorImpl:
    """Plain class (testable without Ray); ``SocketActor`` is its Ray actor form."""

    def __init__(self, index: int, profile: NodeProfile, n_sockets: int, trace: bool = True) -> None:
        self.index = index
        self.profile = profile
        self.n_sockets = n_sockets
        self.trace = trace
        self.peers: dict[int, Any] = {}
        self.endpoints: dict[int, Any] | None = None  # socket -> p2p.endpoint.Endpoint
        self.transport: Any = None
        self.server: Any = None  # p2p.endpoint.LocalServer, opened by listen()
        self.cpu: int | None = None  # the CPU this actor is pinned to (oversubscribed hosts only)
        self._cpus: tuple[int, ...] | None = None
        self.message_marks = True  # kept across power-cycles (the node decides it)
        self.wirings = 0  # transports made by connect(): a power-cycle in place makes none
        self._fresh_state()

    def _fresh_state(self) -> None:
        from sn40l_emu.fabric.network import NetworkView
        from sn40l_emu.fabric.topology import make_topology
        from sn40l_emu.p2p.wire.fast_transport import PeerMailbox

        self.model = SocketModel(self.index, self.profile, trace=self.trace)
        self.model.message_marks = self.message_marks
        self.mailbox = PeerMailbox(self.index)
        params = self.profile.p2p.params()
        self.network = NetworkView(self.index, make_topology(params.topology, self.n_sockets), params)

    async def reset(self, profile: NodeProfile | None = None, rewire: bool = False) -> int:
        """Power-cycle the socket: clock 0, empty tiers and store, idle links (the process stays).

        With ``profile`` the socket comes back as a socket of that profile: a sweep over
        platforms reuses the actor processes instead of starting new ones. The node
        power-cycles every socket together, so the connections to the peers are kept
        (:meth:`FramedTransport.restart`) unless ``rewire``, a new profile, or anything
        in flight here asks for new ones.
        """
        if profile is None and not rewire and self._restart():
            return os.getpid()
        await self._close_transport()
        if profile is not None:
            self.profile = profile
        self._fresh_state()
        if self.peers:
            await self.connect(self.peers, self.endpoints)
        return os.getpid()

    def _restart(self) -> bool:
        """Power-cycle in place over the same connections; False (nothing changed) when the
        transport cannot (none yet, or something in flight)."""
        from sn40l_emu.fabric.network import NetworkView

        restart = getattr(self.transport, "restart", None)
        if restart is None or not self.mailbox.idle:
            return False
        network = NetworkView(self.index, self.network.topology, self.network.params)
        if not restart(network):
            return False
        self.network = network
        self.model = SocketModel(self.index, self.profile, trace=self.trace)
        self.model.message_marks = self.message_marks
        return True

    async def listen(self) -> Any:
        """Open (once) this socket's same-host endpoint; returns its ``Endpoint`` (path, Ray node)."""
        from sn40l_emu.p2p.wire.endpoint import Endpoint, LocalServer

        if self.server is None:
            server = LocalServer(self.index, self.n_sockets, self.profile.p2p.max_frame_bytes,
                                 lambda: self.mailbox, lambda src, why: self.mailbox.fail(src, why),
                                 self._peer_dir)
            await server.start()
            self.server = server
        return Endpoint(self.index, self.server.path, _ray_node_id())

    async def connect(self, peers: dict[int, Any], endpoints: dict[int, Any] | None = None) -> int:
        """Learn the peers' actor handles (and endpoints: same-host peers then get a direct
        connection, the others the Ray path); returns this actor's pid."""
        from sn40l_emu.p2p.ray_transport import RayTransport
        from sn40l_emu.p2p.wire.fast_transport import FastTransport, same_host_peers

        await self._close_transport()
        self.mailbox.clear_dead()
        self.wirings += 1
        self.peers = dict(peers)
        self.endpoints = None if endpoints is None else dict(endpoints)
        p = self.model.profile.p2p
        if self.endpoints is None:
            self.transport = RayTransport(self.model.index, peers, self.mailbox, self.network,
                                          p.max_frame_bytes, p.timeout_s)
            return os.getpid()
        transport = FastTransport(self.model.index, peers, self.mailbox, self.network, p.max_frame_bytes,
                                  p.timeout_s, same_host_peers(self.index, self.endpoints),
                                  arena_dir=self.server.dir if self.server is not None else None)
        self.transport = transport
        await transport.open()
        self._spread_over_cpus()
        return os.getpid()

    def _spread_over_cpus(self) -> None:
        """More socket actors than CPUs on this host: pin this one to a CPU (p2p.affinity)."""
        from sn40l_emu.p2p.wire.affinity import allowed_cpus, cpu_for, pin_process

        if self._cpus is None:
            self._cpus = allowed_cpus()  # before any pinning of ours
        cpu = cpu_for(self.index, self.endpoints or {}, self._cpus)
        if cpu is not None and cpu != self.cpu:
            pin_process(cpu)
            self.cpu = cpu

    def _peer_dir(self, src: int) -> str | None:
        """Endpoint directory of socket ``src`` as the node told us (where its arenas live)."""
        endpoint = (self.endpoints or {}).get(src)
        return os.path.dirname(endpoint.path) if endpoint is not None else None

    async def _close_transport(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()
        self.transport = None

    async def p2p_status(self) -> dict[str, Any]:
        """Which peers this socket reaches over its direct connection, and frames it refused."""
        local = getattr(self.transport, "local_peers", [])
        return {"socket": self.index, "local_peers": list(local), "cpu": self.cpu,
                "endpoint": self.server.path if self.server is not None else "",
                "rejected_frames": self.server.rejected if self.server is not None else 0,
                "wirings": self.wirings}

    async def quiesce_p2p(self, dead: list[int], detail: str) -> tuple[int, int]:
        """Recovery, step 1 on a survivor: a program still waiting for a frame stops (its
        receive fails), and every frame this socket sent reaches its live peer (or never will).
        Returns (frames dropped, sends that never arrived). See ``cluster.recovery``."""
        dropped = self.mailbox.drop_all(detail)
        if self.transport is None:
            return dropped, 0
        return dropped, int(await self.transport.quiesce(dead))

    async def drop_p2p(self, detail: str) -> int:
        """Recovery, step 2 on a survivor (after every survivor's step 1): drop the frames
        delivered and not received; returns how many. Sequences restart with the next wiring."""
        dropped = self.mailbox.drop_all(detail)
        if self.transport is not None:
            dropped += self.transport.drop_in_flight(detail, self.model.clock.now_ns)
        else:
            self.network.flush_after(self.model.clock.now_ns)
        return dropped

    async def deliver(self, header: bytes, payload: np.ndarray | None) -> None:
        """A peer's frame: validated (never unpickled), then queued by (src, tag, seq)."""
        from sn40l_emu.p2p.delivery import handle_delivery

        handle_delivery(self.mailbox, header, payload, self.model.profile.p2p.max_frame_bytes)

    async def run_program(self, program: Program | ProgramParcel, start_ns: int = 0, reset: bool = False,
                          links: BusyLinks = (), prelude: Sequence[Replayed] = ()) -> ProgramResult:
        """Run ``program`` (packed or not: socket_actor/parcel.py) from ``max(clock, start_ns)``,
        power-cycled first if ``reset``; the node's deferred programs (``prelude``) first.

        The node moves clocks, power-cycles and keeps links busy (reused runs that
        left traffic behind) without calls of their own (barriers, reused costs, sweep
        rows) and hands them over with the next program, as it does with the programs
        it answered itself (repeats since a power-cycle, cluster/replay.py).
        """
        await self.replay(prelude)
        return await self._run(program, start_ns, reset, links)

    async def replay(self, prelude: Sequence[Replayed]) -> int:
        """Run programs the node answered without calling (cluster/replay.py), in order, each
        from where the node put it; each must end where the node said (else EmuError)."""
        for program, start_ns, reset, links, end_ns in prelude:
            result = await self._run(program, start_ns, reset, links)
            if result.end_ns != end_ns:
                raise EmuError(f"socket {self.index}: replayed program {result.label!r} ended at "
                               f"{result.end_ns} ns, not at {end_ns} ns as when it ran first")
        return len(prelude)

    async def _run(self, program: Program | ProgramParcel, start_ns: int, reset: bool,
                   links: BusyLinks) -> ProgramResult:
        if reset:
            await self.reset()
        self.model.clock.advance_to(start_ns)
        self.network.occupy(links)
        return await self.model.run_program(unpack(program), self.transport)

    async def occupy_links(self, links: BusyLinks) -> int:
        """Links busy until at least the given times (a reused run's traffic, see engine/reuse.py)."""
        self.network.occupy(links)
        return len(links)

    async def set_message_marks(self, on: bool) -> bool:
        """Whether the trace marks every P2P message (socket_model.py)."""
        self.message_marks = self.model.message_marks = on
        return on

    async def status(self) -> dict[str, Any]:
        st = self.model.status()
        st["pid"] = os.getpid()
        st["ray_node"] = _ray_node_id()
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


def _ray_node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


SocketActor = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(SocketActorImpl)
