"""The distributed node: one :class:`SocketActor` per socket, placed with a placement group.

The driver-side handle keeps the node's clocks: every actor call that moves a
clock reports the new value, so reading the clocks costs no actor call, and a
clock moved here without running anything (a barrier, or a cost-reuse result
applied by :mod:`sn40l_emu.engine.reuse`) reaches the actor with its next
program, in the same call. A program is one actor call per socket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sn40l_emu.cluster.bringup import NAMESPACE, SOCKET_RESOURCE
from sn40l_emu.cluster.node import ManagedNode, Versions
from sn40l_emu.cluster.placement import Placement, PlacementSpec, actor_name, check_capacity, node_ids_for
from sn40l_emu.cluster.replay import Deferred, ReplayBook, deferrable
from sn40l_emu.config import NodeProfile
from sn40l_emu.errors import CollectiveAbortedError, ConfigError, LinkLostError, SocketDeadError, SocketKilledError
from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.program import CollectiveOp, Program
from sn40l_emu.socket_actor.parcel import ProgramParcel, pack
from sn40l_emu.socket_actor.socket_model import ProgramResult, settle
from sn40l_emu.socket_actor.state_changes import SetDegradation, StateChange
from sn40l_emu.socket_actor.tile import Degradation

# How long a new node waits for slots that Ray has not yet released from removed actors.
CAPACITY_WAIT_S = 120.0


def _cluster_has_socket_resource() -> bool:
    import ray

    return ray.cluster_resources().get(SOCKET_RESOURCE, 0) > 0


class RayNode(ManagedNode):
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
        self._versions = Versions()
        self._clock: list[int] | None = None  # the sockets' clocks as the actors last reported them
        self._pending: dict[int, int] = {}  # clocks moved here, not yet told to the actor
        self._resets: set[int] = set()  # sockets power-cycled here, not yet told to the actor
        # a step ended in a fault since the last power-cycle (frames may still be in flight):
        # the next power-cycle also rewires the sockets instead of keeping their connections
        self._rewire = False
        # repeats since the last power-cycle, answered here and run on the actors later (replay.py)
        self._replay = ReplayBook()
        # the links' FIFO state as the results left it (engine/reuse.py); absent: not known here
        self._busy: dict[int, BusyLinks] = dict.fromkeys(range(self.n_sockets), ())
        self._pending_links: dict[int, BusyLinks] = {}  # links kept busy here, not yet told to the actor
        self._marks = True  # whether traces mark every P2P message
        self.placement_group = placement_group
        self.owned = owned
        self._degradations = [Degradation() for _ in self.actors]
        self.virtually_dead: set[int] = set()
        self._unread: list[Any] = []  # refs of a failed step not read yet (see read_ready)

    @property
    def version(self) -> int:
        return self._versions.version

    @version.setter
    def version(self, _value: int) -> None:
        """Changed from outside (recovery): a state no cost cache has seen; re-read the clocks."""
        self._versions.fresh()
        self._clock = None
        self._replay.forget()

    # ---- construction -----------------------------------------------------
    @classmethod
    def create(cls, profile: NodeProfile, *, n_sockets: int | None = None, name: str = "",
               placement: Placement = Placement.PACK, detached: bool = False,
               node_ids: Sequence[str] | None = None, trace: bool = True,
               timeout_s: float = 120.0, wire: bool = True) -> RayNode:
        """Create the actors (Ray must be initialised) and connect them to each other.

        ``node_ids`` pins socket i to Ray node ``node_ids[i]`` (an explicit map);
        otherwise a placement group packs or spreads them. ``wire=False`` returns
        once the actors are asked for, before their processes are up; the caller
        calls :meth:`connect` later. Bringing up several nodes that way lets Ray
        start all their processes at once (each raylet starts as many at a time
        as it has CPUs), instead of one node's eight after another's.
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
        if wire:
            node.connect(timeout_s)
        return node

    @classmethod
    def attach(cls, profile: NodeProfile, name: str, n_sockets: int) -> RayNode:
        """Attach to the actors of a detached node created by ``sn40l-emu up``."""
        import ray

        actors = [ray.get_actor(actor_name(name, i), namespace=NAMESPACE) for i in range(n_sockets)]
        node = cls(profile, actors, name=name, owned=False)
        node.detached = True
        node._rewire = True  # whatever earlier drivers left in flight
        node._versions.fresh()  # whatever earlier drivers did to it: a state no cost cache has seen
        return node

    def kill(self, socket: int, *, process: bool = False) -> None:
        """Fault injection. ``process``: SIGKILL the socket's actor process (``ray.kill`` when it
        runs on another machine); otherwise the socket is dead in the model only (virtual)."""
        import os
        import signal

        import ray

        self._busy.pop(socket, None)
        self._rewire = True
        self._replay.forget()
        if not process:
            self.virtually_dead.add(socket)
            self._versions.bump(("kill", socket))
            return
        st = self._get([self.actors[socket].status.remote()], 60)[0]
        if st["ray_node"] == ray.get_runtime_context().get_node_id():
            os.kill(int(st["pid"]), signal.SIGKILL)
        else:
            ray.kill(self.actors[socket], no_restart=True)
        self._versions.bump(("kill", socket, "process"))

    def recover(self, timeout_s: float = 60.0) -> list[int]:
        """Recreate dead sockets (fresh: clock 0, empty memory) on the capacity left; returns them.

        Raises ``NoCapacityError`` when too few ``sn40l_socket`` slots are left; the full
        report (which Ray node each went to) is kept in ``last_recovery``. See
        :mod:`sn40l_emu.cluster.recovery`. Virtually killed sockets are power-cycled in place.
        """
        from sn40l_emu.cluster.recovery import dead_sockets, recover

        # clocks moved here reach the survivors now; the dead start afresh (recovery may align them)
        gone = set(dead_sockets(self)) | self.virtually_dead
        self._replay.forget()
        for s in gone:  # what a lost socket had yet to run is lost with it
            self._replay.take(s)
        self._pending = {s: t for s, t in self._pending.items() if s not in gone}
        self._pending_links = {s: b for s, b in self._pending_links.items() if s not in gone}
        self._busy = {}  # survivors' queued traffic may be dropped: learnt again from the next results
        self._resets -= gone
        self._flush(timeout_s)
        self._clock = None
        self.last_recovery = recover(self, timeout_s=timeout_s)
        self._unread = read_ready(self._unread, timeout_s)  # the survivors stopped their receives
        back = set(self.last_recovery.recreated)
        virtual = sorted(self.virtually_dead)
        if virtual:
            self._get([self.actors[i].reset.remote(None, True) for i in virtual], timeout_s)
            self.connect(timeout_s)  # everyone re-learns the power-cycled sockets' endpoints
            self.virtually_dead.clear()
            back |= set(virtual)
        for i in back:
            self._degradations[i] = Degradation()
        self._versions.bump(("recover", tuple(sorted(back))))
        if not self._marks and back:  # a recreated actor starts marking every message
            self._get([self.actors[i].set_message_marks.remote(False) for i in sorted(back)], timeout_s)
        self._flush(timeout_s)
        self._clock = None  # recreated sockets start again at 0 (or aligned): ask the actors
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

        from sn40l_emu.cluster.recovery import PING_TIMEOUT_S

        for i, a in enumerate(self.actors):
            try:
                ray.get(a.ping.remote(), timeout=PING_TIMEOUT_S)
            except Exception:
                return i
        return -1

    def run_programs(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        dead = sorted(set(programs) & self.virtually_dead)
        if dead:
            raise SocketDeadError(dead[0], "killed (virtual fault)")
        timeout = self.profile.p2p.timeout_s * 2 + 60
        if self._resets and (self._rewire or any(isinstance(op, CollectiveOp) for p in programs.values()
                                                 for op in p.ops)):
            self._flush(timeout)  # every peer power-cycled (and rewired) before the first frame flies
        pending, resets, links = self._pending, self._resets, self._pending_links
        step = None
        if (self._replay.history is not None and self._clock is not None
                and all(deferrable(p) for p in programs.values())):
            step = ReplayBook.step(programs, pending, links)
            answered = self._replay.lookup(step)
            if answered is not None:
                return self._answer(programs, answered)
        else:
            self._replay.forget()
        packed = _pack_once(programs)
        earlier: dict[int, tuple[Program, Program | ProgramParcel]] = {}
        refs = [self.actors[i].run_program.remote(packed[i], pending.get(i, 0), i in resets, links.pop(i, ()),
                                                  _prelude(self._replay.take(i), earlier))
                for i in programs]
        outcomes: list[ProgramResult | BaseException] = []
        try:  # one ray.get for the whole step: the common case, and the driver's cheapest
            outcomes.extend(self._get(refs, timeout))
        except (SocketKilledError, LinkLostError, CollectiveAbortedError):
            outcomes = []
            try:
                for ref in refs:  # a fault inside the step: every socket ends it first (see settle)
                    try:
                        outcomes.append(self._get([ref], timeout)[0])
                    except (SocketKilledError, LinkLostError, CollectiveAbortedError) as exc:
                        outcomes.append(exc)
            except BaseException:  # a socket died while the others ended the step
                self._rewire = True
                self._replay.forget()
                self._unread = read_ready([*self._unread, *refs], 0)
                raise
        except BaseException:  # e.g. a socket process died: the others' outcomes are moot
            self._rewire = True  # a step that failed may leave frames in flight
            self._replay.forget()
            self._unread = read_ready([*self._unread, *refs], 0)
            raise
        resets -= set(programs)
        for i in programs:  # the moved clocks and power-cycles travelled with the program
            pending.pop(i, None)
        if any(isinstance(o, BaseException) for o in outcomes):
            self._clock = None  # the step stopped where each socket was: ask the actors
            self._rewire = True
            self._replay.forget()
            for i in programs:
                self._busy.pop(i, None)
            return settle(outcomes)
        clock = self.clocks() if self._clock is None else self._clock
        for r in outcomes:
            assert isinstance(r, ProgramResult)
            clock[r.socket] = r.end_ns
            self._busy[r.socket] = r.busy_links
        results = settle(outcomes)
        if step is not None:
            self._replay.record(step, results)
        return results

    def _answer(self, programs: Mapping[int, Program], results: dict[int, ProgramResult]) -> dict[int, ProgramResult]:
        """A repeat answered from the replay book: the node moves as if it ran; the programs wait,
        with the clocks, links and power-cycle they carry, for each actor's next call."""
        clock = self._clock
        assert clock is not None
        for i, p in programs.items():
            r = results[i]
            self._replay.defer(i, Deferred(p, self._pending.pop(i, 0), i in self._resets,
                                           self._pending_links.pop(i, ()), r.end_ns))
            self._resets.discard(i)
            clock[i] = r.end_ns
            self._busy[i] = r.busy_links
        return results

    def _flush(self, timeout_s: float | None = None, skip: set[int] | None = None) -> None:
        """Tell the actors the programs, power-cycles and clocks decided here (before any other call)."""
        if self._replay.deferred:
            deferred = {s: self._replay.take(s) for s in sorted(self._replay.deferred)}
            earlier: dict[int, tuple[Program, Program | ProgramParcel]] = {}
            self._get([self.actors[s].replay.remote(_prelude(items, earlier)) for s, items in deferred.items()],
                      timeout_s or 120)
        if self._resets:
            rewire, every = self._rewire, len(self._resets) == self.n_sockets
            self._get([self.actors[s].reset.remote(None, rewire) for s in sorted(self._resets)], timeout_s or 120)
            self._resets = set()
            if every:  # every socket power-cycled with fresh connections (or none needed)
                self._rewire = False
        todo = {s: t for s, t in self._pending.items() if not skip or s not in skip}
        if todo:
            self._get([self.actors[s].advance_to.remote(t) for s, t in todo.items()], timeout_s)
        for s in todo:
            del self._pending[s]
        links = {s: b for s, b in self._pending_links.items() if not skip or s not in skip}
        if links:
            self._get([self.actors[s].occupy_links.remote(b) for s, b in links.items()], timeout_s)
        for s in links:
            del self._pending_links[s]

    def status(self) -> list[dict[str, Any]]:
        self._flush(60)
        return self._get([a.status.remote() for a in self.actors], 60)

    def load_tensors(self, per_socket: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        self._flush()
        self._replay.forget()
        self._get([self.actors[i].load_tensors.remote(dict(t)) for i, t in per_socket.items()])

    def get_tensors(self, socket: int, names: list[str]) -> dict[str, np.ndarray]:
        self._flush()
        return self._get([self.actors[socket].get_tensors.remote(names)])[0]

    def apply_change(self, sockets: list[int], change: StateChange) -> None:
        self._flush()
        self._replay.forget()
        self._get([self.actors[i].apply_change.remote(change) for i in sockets])
        for i in sockets:  # a flush drops queued traffic: learnt again from the next results
            self._busy.pop(i, None)
        if isinstance(change, SetDegradation):
            for i in sockets:
                self._degradations[i] = change.applied_to(self._degradations[i])
        self._versions.bump((tuple(sockets), change))

    def degradation(self, socket: int) -> Degradation:
        return self._degradations[socket]

    def advance_clocks(self, targets: Mapping[int, int]) -> None:
        """Move clocks here; each actor learns its clock with its next call (no call now)."""
        clock = self.clocks() if self._clock is None else self._clock
        for s, t in targets.items():
            if t > clock[s]:
                clock[s] = self._pending[s] = t

    def busy_links(self, sockets: list[int]) -> dict[int, BusyLinks] | None:
        """From the results (no call): None while a socket's links are not known here."""
        if any(s not in self._busy for s in sockets):
            return None
        clock = self.clocks()
        return {s: tuple((k, f) for k, f in self._busy[s] if f > clock[s]) for s in sockets}

    def occupy_links(self, targets: Mapping[int, BusyLinks]) -> None:
        """Keep links busy here; each actor learns it with its next call (no call now)."""
        for s, busy in targets.items():
            merged = dict(self._busy.get(s, ()))
            todo = dict(self._pending_links.get(s, ()))
            for k, f in busy:
                merged[k] = max(merged.get(k, 0), f)
                todo[k] = max(todo.get(k, 0), f)
            if s in self._busy:
                self._busy[s] = tuple(sorted(merged.items()))
            self._pending_links[s] = tuple(sorted(todo.items()))

    def set_message_marks(self, on: bool) -> None:
        """Whether traces mark every P2P message (socket_model.py); every actor now."""
        self._flush()
        self._replay.forget()
        self._get([a.set_message_marks.remote(on) for a in self.actors], 60)
        self._marks = on

    def clocks(self) -> list[int]:
        if self._clock is None:
            self._flush()
            self._clock = list(self._get([a.clock_ns.remote() for a in self.actors]))
        return list(self._clock)

    def advance_to(self, sockets: list[int], t_ns: int) -> None:
        self.advance_clocks(dict.fromkeys(sockets, t_ns))

    def alloc(self, socket: int, tier: str, name: str, size_bytes: int, read_only: bool = False) -> None:
        self._flush()
        self._replay.forget()
        self._get([self.actors[socket].alloc.remote(tier, name, size_bytes, read_only)])

    def free(self, socket: int, tier: str, name: str) -> None:
        self._flush()
        self._replay.forget()
        self._get([self.actors[socket].free.remote(tier, name)])

    def reset(self) -> None:
        """Power-cycle every socket. The actors learn it with their next call: a program
        without collectives carries it (so a sweep row's reset and load are one call)."""
        self._resets = set(range(self.n_sockets))
        self._replay.power_cycle((self._marks, self.trace))  # drops the deferred programs unrun
        self.virtually_dead.clear()
        self._degradations = [Degradation() for _ in self.actors]
        self._versions.reset()
        self._pending = {}
        self._pending_links = {}
        self._busy = dict.fromkeys(range(self.n_sockets), ())
        self._clock = [0] * self.n_sockets

    def reprofile(self, profile: NodeProfile) -> None:
        """Power-cycle every socket into a socket of ``profile`` (same actors, same placement).

        Starting eight actor processes is most of a node's bring-up; a sweep over
        platforms pays it once. Afterwards the node is exactly a fresh node of
        ``profile``: clock 0, empty memory, idle links of the new profile.
        """
        self._get([a.reset.remote(profile) for a in self.actors], 120)
        self._resets = set()
        self._rewire = False  # a new profile always rewires
        self._replay.clear()
        self.profile = profile
        self.virtually_dead.clear()
        self._degradations = [Degradation() for _ in self.actors]
        self._versions = Versions()
        self._pending = {}
        self._pending_links = {}
        self._busy = dict.fromkeys(range(self.n_sockets), ())
        self._clock = [0] * self.n_sockets

    def pids(self) -> list[int]:
        return self._get([a.ping.remote() for a in self.actors], 60)

    def close(self) -> None:
        """Kill the actors and the placement group this handle created.

        A node this handle merely attached to (``sn40l-emu up``) lives on: it is told
        the clocks and power-cycles decided here first, so the next driver finds them.
        """
        import ray
        from ray.util.placement_group import remove_placement_group

        if not self.owned:
            if self.actors:
                self._flush(60)
            return
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        from sn40l_emu.cluster.recovery import PING_TIMEOUT_S

        self._unread = read_ready(self._unread, PING_TIMEOUT_S)  # killed: they end at once
        if self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception:
                pass
        self.actors = []


def read_ready(refs: Sequence[Any], timeout_s: float) -> list[Any]:
    """Read, and drop, the outcomes of a failed step's calls that end within ``timeout_s``;
    returns the refs still running, to be read later (:meth:`RayNode.recover`, ``close``).

    Why: ``ray.get`` of a list raises at the first error and leaves the other refs
    unread; when such a ref holds an error (a survivor's ``SocketDeadError`` after a
    peer's process was killed), Ray logs it with its traceback as an "Unhandled error"
    once the ref is garbage-collected, which reads like a crash for a fault the caller
    handles (it recovers the node and retries). Not waited for at the failure itself: a
    survivor may wait for a frame from another survivor that failed, until recovery
    stops its receives (or the P2P timeout, a minute later).
    """
    import ray

    if not refs:
        return []
    ready, running = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref, timeout=0)
        except Exception:  # the failure itself was raised already, by the first ray.get
            pass
    return list(running)


def _prelude(items: list[Deferred], packed: dict[int, tuple[Program, Program | ProgramParcel]]
             ) -> list[tuple[Program | ProgramParcel, int, bool, BusyLinks, int]]:
    """Deferred programs as an actor call carries them (SocketActorImpl.replay); ``packed``
    (by id, with the program kept alive) packs a program deferred on every socket once."""
    out = []
    for d in items:
        hit = packed.get(id(d.program))
        if hit is None or hit[0] is not d.program:
            hit = packed[id(d.program)] = (d.program, pack(d.program))
        out.append((hit[1], d.start_ns, d.reset, d.links, d.end_ns))
    return out


def _pack_once(programs: Mapping[int, Program]) -> dict[int, Program | ProgramParcel]:
    """Each distinct program packed once (socket_actor/parcel.py): one object for every socket,
    or equal ones (a composition load builds its program per socket)."""
    by_id: dict[int, Program | ProgramParcel] = {}
    by_value: dict[Program, Program | ProgramParcel] = {}
    out: dict[int, Program | ProgramParcel] = {}
    for s, p in programs.items():
        got = by_id.get(id(p))
        if got is None:
            try:
                got = by_value.get(p)
                if got is None:
                    got = by_value[p] = pack(p)
            except TypeError:  # an unhashable op (functional mode): by identity only
                got = pack(p)
            by_id[id(p)] = got
        out[s] = got
    return out


def create_node(profile: Any, spec: PlacementSpec, *, n_sockets: int | None = None, **kwargs: Any) -> RayNode:
    """``RayNode.create`` with a parsed placement (map entries resolved against the live cluster)."""
    n = n_sockets or profile.sockets
    if spec.kind is None and len(spec.socket_map) != n:
        raise ConfigError("placement map", len(spec.socket_map), f"{n} entries, one per socket")
    return RayNode.create(profile, n_sockets=n, placement=spec.kind or Placement.PACK,
                          node_ids=node_ids_for(spec), **kwargs)
