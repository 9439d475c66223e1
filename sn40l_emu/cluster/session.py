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

import os
from collections.abc import Iterator
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
        yield node
    finally:
        node.close()
        if started is not None:
            started.shutdown()
        else:
            import ray

            ray.shutdown()


def _same_profile(state: object, profile: NodeProfile) -> bool:
    """Attach only to a node built from exactly this resolved profile (overrides included)."""
    from sn40l_emu.config import load_profile

    try:
        return load_profile(state.profile, state.overrides) == profile  # type: ignore[attr-defined]
    except Exception:
        return False
