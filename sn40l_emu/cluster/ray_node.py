"""The distributed node: one :class:`SocketActor` per socket, placed with a placement group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sn40l_emu.cluster.bringup import NAMESPACE, SOCKET_RESOURCE
from sn40l_emu.cluster.node import Node
from sn40l_emu.cluster.placement import Placement, PlacementSpec, actor_name, check_capacity, node_ids_for
from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import CollectiveAbortedError, ConfigError, LinkLostError, SocketDeadError, SocketKilledError
from sn40l_emu.program import Program
from sn40l_emu.socket_actor.socket_model import ProgramResult, settle
from sn40l_emu.socket_actor.state_changes import SetDegradation, StateChange
from sn40l_emu.socket_actor.tile import Degradation

# How long a new node waits for slots that Ray has not yet released from removed actors.
CAPACITY_WAIT_S = 30.0


def _cluster_has_socket_resource() -> bool:
    import ray

    return ray.cluster_resources().get(SOCKET_RESOURCE, 0) > 0


class RayNode(Node):
    """Sockets as Ray actors; collectives over the Ray P2P transport."""

    detached = False  # actors outlive the driver (``sn40l-emu up``); recovery recreates them alike
    trace = True
    last_recovery: Any = None  # the RecoveryReport of the latest recover()

    def __init__(self, profile: NodeProfile, actors: Sequence[Any], *, name: str = "",
                 placement_group: Any = None, owned: bool = True) -> None:
        self.profile = profile
        self.actors = list(actors)
        self.n_sockets = len(self.actors)
        self.name = name
        self.version = 0
        self.placement_group = placement_group
        self.owned = owned
        self._degradations = [Degradation() for _ in self.actors]
        self.virtually_dead: set[int] = set()

    # ---- construction -----------------------------------------------------
    @classmethod
    def create(cls, profile: NodeProfile, *, n_sockets: int | None = None, name: str = "",
               placement: Placement = Placement.PACK, detached: bool = False,
               node_ids: Sequence[str] | None = None, trace: bool = True,
               timeout_s: float = 120.0) -> RayNode:
        """Create the actors (Ray must be initialised) and connect them to each other.

        ``node_ids`` pins socket i to Ray node ``node_ids[i]`` (an explicit map);
        otherwise a placement group packs or spreads them.
        """
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import (
            NodeAffinitySchedulingStrategy,
            PlacementGroupSchedulingStrategy,
        )

        from sn40l_emu.socket_actor.actor import SocketActor

        n = n_sockets or profile.sockets
        use_res = _cluster_has_socket_resource()
        if use_res:  # fail clearly, not after a placement-group timeout; wait for slots still held
            check_capacity(n, node_ids, wait_s=CAPACITY_WAIT_S)
        bundle = {SOCKET_RESOURCE: 1} if use_res else {"CPU": 0.001}
        lifetime = "detached" if detached else None
        pg = None
        strategies: list[Any]
        if node_ids is not None:
            if len(node_ids) != n:
                raise ValueError(f"socket map has {len(node_ids)} entries for {n} sockets")
            strategies = [NodeAffinitySchedulingStrategy(node_id=nid, soft=False) for nid in node_ids]
        else:
            pg = placement_group([dict(bundle) for _ in range(n)], strategy=placement.value.upper(),
                                 lifetime=lifetime, name=f"{name}:pg" if name else "")
            ray.get(pg.ready(), timeout=timeout_s)
            strategies = [PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
                          for i in range(n)]
        actors = []
        for i in range(n):
            opts: dict[str, Any] = {"scheduling_strategy": strategies[i], "namespace": NAMESPACE}
            if use_res:
                opts["resources"] = {SOCKET_RESOURCE: 1}
            if name:
                opts["name"] = actor_name(name, i)
            if detached:
                opts["lifetime"] = "detached"
            actors.append(SocketActor.options(**opts).remote(i, profile, n, trace))
        node = cls(profile, actors, name=name, placement_group=pg)
        node.detached, node.trace = detached, trace
        node.connect(timeout_s)
        return node

    @classmethod
    def attach(cls, profile: NodeProfile, name: str, n_sockets: int) -> RayNode:
        """Attach to the actors of a detached node created by ``sn40l-emu up``."""
        import ray

        actors = [ray.get_actor(actor_name(name, i), namespace=NAMESPACE) for i in range(n_sockets)]
        node = cls(profile, actors, name=name, owned=False)
        node.detached = True
        return node

    def kill(self, socket: int, *, process: bool = False) -> None:
        """Fault injection. ``process``: SIGKILL the socket's actor process (``ray.kill`` when it
        runs on another machine); otherwise the socket is dead in the model only (virtual)."""
        import os
        import signal

        import ray

        if not process:
            self.virtually_dead.add(socket)
            self.version += 1
            return
        st = self._get([self.actors[socket].status.remote()], 60)[0]
        if st["ray_node"] == ray.get_runtime_context().get_node_id():
            os.kill(int(st["pid"]), signal.SIGKILL)
        else:
            ray.kill(self.actors[socket], no_restart=True)
        self.version += 1

    def recover(self, timeout_s: float = 60.0) -> list[int]:
        """Recreate dead sockets (fresh: clock 0, empty memory) on the capacity left; returns them.

        Raises ``NoCapacityError`` when too few ``sn40l_socket`` slots are left; the full
        report (which Ray node each went to) is kept in ``last_recovery``. See
        :mod:`sn40l_emu.cluster.recovery`. Virtually killed sockets are power-cycled in place.
        """
        from sn40l_emu.cluster.recovery import recover

        self.last_recovery = recover(self, timeout_s=timeout_s)
        back = set(self.last_recovery.recreated)
        virtual = sorted(self.virtually_dead)
        if virtual:
            self._get([self.actors[i].reset.remote() for i in virtual], timeout_s)
            self.connect(timeout_s)  # everyone re-learns the power-cycled sockets' endpoints
            self.virtually_dead.clear()
            back |= set(virtual)
        for i in back:
            self._degradations[i] = Degradation()
        self.version += 1
        return sorted(back)

    def connect(self, timeout_s: float = 120.0, *, fast_p2p: bool = True) -> list[int]:
        """Wire the sockets to each other; returns their pids.

        With ``fast_p2p`` every actor opens its same-host endpoint first and
        learns everyone's: peers on the same Ray node then exchange frames over
        a direct Unix-domain connection, the others over Ray actor tasks
        (:mod:`sn40l_emu.p2p.wire.fast_transport`). ``fast_p2p=False``: Ray for all.
        """
        peers = dict(enumerate(self.actors))
        endpoints = None
        if fast_p2p:
            endpoints = dict(enumerate(self._get([a.listen.remote() for a in self.actors], timeout_s)))
        return self._get([a.connect.remote(peers, endpoints) for a in self.actors], timeout_s)

    # ---- calls ------------------------------------------------------------
    def _get(self, refs: list[Any], timeout_s: float | None = None) -> list[Any]:
        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            RayActorError,
            RayTaskError,
        )

        try:
            return list(ray.get(refs, timeout=timeout_s))
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):  # our typed error, raised inside the actor
                raise cause from None
            raise
        except (ActorDiedError, RayActorError, ActorUnavailableError) as exc:
            raise SocketDeadError(self._which_dead(), str(exc).splitlines()[0]) from exc
        except GetTimeoutError as exc:
            raise SocketDeadError(self._which_dead(), "no answer in time") from exc

    def _which_dead(self) -> int:
        import ray

        for i, a in enumerate(self.actors):
            try:
                ray.get(a.ping.remote(), timeout=5)
            except Exception:
                return i
        return -1

    def run_programs(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        dead = sorted(set(programs) & self.virtually_dead)
        if dead:
            raise SocketDeadError(dead[0], "killed (virtual fault)")
        timeout = self.profile.p2p.timeout_s * 2 + 60
        refs = [self.actors[i].run_program.remote(p) for i, p in programs.items()]
        outcomes: list[ProgramResult | BaseException] = []
        for ref in refs:  # a fault inside the step: every socket ends it first (see settle)
            try:
                outcomes.append(self._get([ref], timeout)[0])
            except (SocketKilledError, LinkLostError, CollectiveAbortedError) as exc:
                outcomes.append(exc)
        return settle(outcomes)

    def status(self) -> list[dict[str, Any]]:
        return self._get([a.status.remote() for a in self.actors], 60)

    def load_tensors(self, per_socket: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        self._get([self.actors[i].load_tensors.remote(dict(t)) for i, t in per_socket.items()])

    def get_tensors(self, socket: int, names: list[str]) -> dict[str, np.ndarray]:
        return self._get([self.actors[socket].get_tensors.remote(names)])[0]

    def apply_change(self, sockets: list[int], change: StateChange) -> None:
        self._get([self.actors[i].apply_change.remote(change) for i in sockets])
        if isinstance(change, SetDegradation):
            for i in sockets:
                self._degradations[i] = change.applied_to(self._degradations[i])
        self.version += 1

    def degradation(self, socket: int) -> Degradation:
        return self._degradations[socket]

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        self._get([self.actors[s].advance_to.remote(t) for s, t in targets.items()])

    def clocks(self) -> list[int]:
        return self._get([a.clock_ns.remote() for a in self.actors])

    def advance_to(self, sockets: list[int], t_ns: int) -> None:
        self._get([self.actors[i].advance_to.remote(t_ns) for i in sockets])

    def alloc(self, socket: int, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        self._get([self.actors[socket].alloc.remote(tier, name, size_bytes, read_only)])

    def free(self, socket: int, tier: str, name: str) -> None:
        self._get([self.actors[socket].free.remote(tier, name)])

    def reset(self) -> None:
        self._get([a.reset.remote() for a in self.actors], 120)
        self.virtually_dead.clear()
        self._degradations = [Degradation() for _ in self.actors]
        self.version = 0

    def pids(self) -> list[int]:
        return self._get([a.ping.remote() for a in self.actors], 60)

    def close(self) -> None:
        """Kill the actors and the placement group this handle created."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if not self.owned:
            return
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        if self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception:
                pass
        self.actors = []


def create_node(profile: Any, spec: PlacementSpec, *, n_sockets: int | None = None, **kwargs: Any) -> RayNode:
    """``RayNode.create`` with a parsed placement (map entries resolved against the live cluster)."""
    n = n_sockets or profile.sockets
    if spec.kind is None and len(spec.socket_map) != n:
        raise ConfigError("placement map", len(spec.socket_map), f"{n} entries, one per socket")
    return RayNode.create(profile, n_sockets=n, placement=spec.kind or Placement.PACK,
                          node_ids=node_ids_for(spec), **kwargs)
