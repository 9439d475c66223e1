"""Getting a node for an experiment, the way a Ray user expects.

* A named node that ``sn40l-emu up`` left running is attached to (when its
  profile matches the one asked for).
* Otherwise, with ``backend=ray`` (the default) the experiment joins the
  cluster at ``address`` / ``RAY_ADDRESS`` if one is given, or starts a
  private local Ray on 127.0.0.1, and creates temporary socket actors.
* ``backend=local`` runs the same socket models in this process (no Ray).
Everything the session started is stopped when it closes, and nothing else.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum

from sn40l_emu.cluster.node import LocalNode, ManagedNode
from sn40l_emu.config import NodeProfile


class Backend(str, Enum):
    RAY = "ray"
    LOCAL = "local"


@contextmanager
def open_node(profile: NodeProfile, *, backend: Backend = Backend.RAY, address: str = "",
              n_sockets: int | None = None, attach_name: str = "", trace: bool = True) -> Iterator[ManagedNode]:
    """A node for one experiment; closes what it created on exit."""
    if backend is Backend.LOCAL:
        node: ManagedNode = LocalNode(profile, n_sockets, trace=trace)
        try:
            yield node
        finally:
            node.close()
        return
    from sn40l_emu.cluster import named
    from sn40l_emu.cluster.bringup import connect, start_local_ray
    from sn40l_emu.cluster.ray_node import RayNode

    state = named.NodeState.load(attach_name or os.environ.get("SN40L_EMU_NODE", named.DEFAULT_NAME))
    if state is not None and _same_profile(state, profile) and n_sockets in (None, state.n_sockets):
        node = named.attach(state.name)
        try:
            yield node
        finally:
            import ray

            node.close()  # attached, not owned: hands over the clocks kept here, kills nothing
            ray.shutdown()
        return
    started = None
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        connect(address)
    else:
        started = start_local_ray(num_cpus=2, sockets=max(16, n_sockets or profile.sockets))
    node = RayNode.create(profile, n_sockets=n_sockets, trace=trace)
    try:
        with _ray_heap_frozen():
            yield node
    finally:
        node.close()
        if started is not None:
            started.shutdown()
        else:
            import ray

            ray.shutdown()


@contextmanager
def open_nodes(profiles: Sequence[NodeProfile], *, backend: Backend = Backend.RAY, address: str = "",
               trace: bool = True) -> Iterator[Iterator[tuple[NodeProfile, ManagedNode]]]:
    """One node per profile, one after the other, for a sweep over platforms.

    On Ray, one Ray for the whole sweep and one set of socket actors: a
    profile with the socket count of the previous one power-cycles the same
    actors into its sockets (:meth:`RayNode.reprofile`) instead of starting a
    Ray and eight processes again. Each node handed out is a fresh node of its
    profile; use it before asking for the next. Closes what it created on exit.
    """
    if backend is Backend.LOCAL or _up_node_exists():  # a node `sn40l-emu up` left: attach as before
        def each_open() -> Generator[tuple[NodeProfile, ManagedNode], None, None]:
            for prof in profiles:
                with open_node(prof, backend=backend, address=address, trace=trace) as node:
                    yield prof, node
        gen = each_open()
        try:
            yield gen
        finally:
            gen.close()
        return
    from sn40l_emu.cluster.bringup import connect, start_local_ray
    from sn40l_emu.cluster.ray_node import RayNode

    address = address or os.environ.get("RAY_ADDRESS", "")
    started = None
    if address:
        connect(address)
    else:
        started = start_local_ray(num_cpus=2, sockets=max([16, *(p.sockets for p in profiles)]))
    live: list[RayNode] = []

    def each() -> Iterator[tuple[NodeProfile, ManagedNode]]:
        for prof in profiles:
            if live and live[0].n_sockets == prof.sockets:
                live[0].reprofile(prof)
            else:
                for old in live:
                    old.close()
                live[:] = [RayNode.create(prof, trace=trace)]
            yield prof, live[0]

    try:
        with _ray_heap_frozen():
            yield each()
    finally:
        for node in live:
            node.close()
        if started is not None:
            started.shutdown()
        else:
            import ray

            ray.shutdown()


@contextmanager
def _ray_heap_frozen() -> Iterator[None]:
    """Ray's objects in the driver (its modules and state, about 70,000 objects where the
    emulator's own are about 40,000) live as long as the session; frozen (``gc.freeze``),
    the collector's full passes stop walking them. Measured on the one-seed ``coe`` sweep
    on Ray: the driver's garbage collection 1.6 -> 0.8 CPU-s. Unfrozen on exit; a heap
    the caller froze already is left exactly as it was (``gc.unfreeze`` would thaw theirs)."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()  # garbage now would never be collected while frozen
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _up_node_exists() -> bool:
    from sn40l_emu.cluster import named

    return named.NodeState.load(os.environ.get("SN40L_EMU_NODE", named.DEFAULT_NAME)) is not None


def _same_profile(state: object, profile: NodeProfile) -> bool:
    """Attach only to a node built from exactly this resolved profile (overrides included)."""
    from sn40l_emu.config import load_profile

    try:
        return load_profile(state.profile, state.overrides) == profile  # type: ignore[attr-defined]
    except Exception:
        return False
