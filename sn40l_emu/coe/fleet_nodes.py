"""Bringing up a fleet of emulated nodes: in this process, or node by node across a Ray cluster.

On Ray each emulated node gets its own eight socket actors, all pinned to one
Ray node (the P2P fabric of a node stays inside one machine), and emulated
node i goes to the Ray node with the most free ``sn40l_socket`` slots at that
moment (ties: the lower node id), so N nodes spread over M Ray nodes
round-robin. Capacity is checked by :func:`sn40l_emu.cluster.placement.check_capacity`
before any actor is created. Everything created here is closed on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from sn40l_emu.cluster.node import LocalNode, ManagedNode
from sn40l_emu.cluster.session import Backend
from sn40l_emu.config import NodeProfile


def ray_homes(n_nodes: int, sockets_per_node: int) -> list[str] | None:
    """Ray node id for each emulated node (None: the cluster advertises no socket slots)."""
    from sn40l_emu.cluster.placement import check_capacity, free_sockets_per_node

    free = free_sockets_per_node()
    if not any(free.values()):
        return None
    check_capacity(n_nodes * sockets_per_node, wait_s=10.0)
    free = free_sockets_per_node()
    homes = []
    for _ in range(n_nodes):
        nid = min(free, key=lambda k: (-free[k], k))
        if free[nid] < sockets_per_node:
            from sn40l_emu.errors import NoCapacityError

            raise NoCapacityError(sockets_per_node, free[nid],
                                  "no Ray node has room for a whole emulated node")
        free[nid] -= sockets_per_node
        homes.append(nid)
    return homes


@contextmanager
def open_fleet(profile: NodeProfile, n_nodes: int, backend: Backend = Backend.LOCAL,
               address: str = "") -> Iterator[list[ManagedNode]]:
    """``n_nodes`` emulated nodes of ``profile``; on Ray, joins ``address`` / RAY_ADDRESS or
    starts a private local Ray on 127.0.0.1 with room for every socket."""
    with ExitStack() as stack:
        nodes: list[ManagedNode] = []
        if backend is Backend.LOCAL:
            for _ in range(n_nodes):
                local = LocalNode(profile, trace=False)
                stack.callback(local.close)
                nodes.append(local)
            yield nodes
            return
        from sn40l_emu.cluster.bringup import connect, prepare_env, start_local_ray

        prepare_env()  # loopback-only Ray and its auth token, before ray is imported
        import ray

        from sn40l_emu.cluster.ray_node import RayNode

        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS", "")
            if address:
                connect(address)
                stack.callback(ray.shutdown)
            else:
                started = start_local_ray(num_cpus=2, sockets=n_nodes * profile.sockets)
                stack.callback(started.shutdown)
        homes = ray_homes(n_nodes, profile.sockets)
        tag = f"fleet{os.getpid()}"
        # Node by node: asking for every node's actors first (RayNode.create(wire=False)) measured
        # 1.10x slower on one 2-core host (bench/fleet_bringup.py): starting an actor is CPU-bound.
        for i in range(n_nodes):
            ids = None if homes is None else [homes[i]] * profile.sockets
            node = RayNode.create(profile, name=f"{tag}-{profile.name}-{i}", node_ids=ids, trace=False)
            stack.callback(node.close)
            nodes.append(node)
        yield nodes
