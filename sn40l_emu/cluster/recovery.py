"""Recovering a node whose sockets died with their Ray node (machine lost mid-run).

:func:`recover` finds every dead socket actor, gives each a new home on the
capacity left, recreates it, reconnects all actors (survivors learn the new
handles) and reports what it did:

* a node placed with a placement group (PACK / SPREAD) keeps it: Ray's GCS
  reschedules the bundles of a dead Ray node onto nodes with free
  ``sn40l_socket`` slots, and the new actor goes into its old bundle;
* a node placed by an explicit map gets the free slots greedily, fullest free
  node first, so the recreated sockets stay together;
* when the slots left are fewer than the dead sockets,
  :class:`~sn40l_emu.errors.NoCapacityError` says how many need a home and
  what is free, and nothing is created.

Before anything is recreated, the survivors' in-flight traffic is flushed
(:func:`flush_survivors`): frames of the collective the dead sockets took down
are still queued in the survivors' mailboxes, and after the rewiring every
sequence number starts again from 0, so a frame kept would be taken by the
next collective for its own (stale data, or a duplicate-frame error). They are
dropped and counted in the report.

A recreated socket is a power-cycled socket, as ``Node.recover`` promises:
clock 0, empty memory, no injected degradation (``align_clocks`` starts it at
the latest surviving clock instead). Reloading its state and retrying the
request that was running belong to the caller (fault injection), not here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sn40l_emu.cluster.bringup import NAMESPACE, SOCKET_RESOURCE
from sn40l_emu.cluster.placement import free_sockets_per_node
from sn40l_emu.errors import NoCapacityError

#: How long a socket actor may take to answer a ping before it counts as dead. A dead actor
#: answers with an error at once (Ray sees its process or its Ray node go); only a live but
#: starved one makes the caller wait, and on a loaded host (load 10+ on 2 cores) an answer
#: can take seconds. A live socket declared dead would be recreated beside itself, so the
#: bound is generous rather than tight.
PING_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RecoveryReport:
    recreated: tuple[int, ...]  # socket indices that got new actors
    homes: dict[int, str] = field(default_factory=dict)  # socket -> Ray node id it now lives on
    clock_ns: int = 0  # the clock the recreated sockets start from
    dropped_frames: int = 0  # frames queued on the survivors, of collectives the loss cut short
    lost_sends: int = 0  # the survivors' sends that never arrived (to a dead socket, mostly)

    def __str__(self) -> str:
        if not self.recreated:
            return "no socket was dead; nothing recreated"
        nodes = sorted({h[:12] for h in self.homes.values()})
        return (f"recreated sockets {list(self.recreated)} on Ray node(s) {', '.join(nodes)}; "
                f"their clocks start at {self.clock_ns} ns; in-flight traffic flushed: "
                f"{self.dropped_frames} queued frame(s) dropped, {self.lost_sends} send(s) lost")


def dead_sockets(node: Any, timeout_s: float = PING_TIMEOUT_S) -> list[int]:
    """Indices of sockets whose actor does not answer a ping within ``timeout_s`` (all of them)."""
    import ray

    refs = {}
    dead = []
    for i, a in enumerate(node.actors):
        try:
            refs[i] = a.ping.remote()
        except Exception:
            dead.append(i)
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    ready_set = set(ready)
    for i, ref in refs.items():
        if ref not in ready_set:
            dead.append(i)
            continue
        try:
            ray.get(ref)
        except Exception:
            dead.append(i)
    return sorted(dead)


def flush_survivors(node: Any, dead: list[int], timeout_s: float) -> tuple[int, int]:
    """Drop the traffic in flight on the surviving sockets; (frames dropped, sends lost).

    Two rounds, because a frame may still be on its way: first every survivor
    stops waiting receives and waits until its own sends have reached their
    live peers; only once all have, each drops what its mailbox still holds.
    """
    alive = [i for i in range(node.n_sockets) if i not in dead]
    if not alive:
        return 0, 0
    detail = f"sockets {dead} were lost; the node is being recovered"
    first = node._get([node.actors[i].quiesce_p2p.remote(dead, detail) for i in alive], timeout_s)
    second = node._get([node.actors[i].drop_p2p.remote(detail) for i in alive], timeout_s)
    return sum(d for d, _ in first) + sum(second), sum(lost for _, lost in first)


def _pg_state(pg: Any) -> str:
    from ray.util import placement_group_table

    return str(placement_group_table(pg).get("state", ""))


def _wait_pg(pg: Any, deadline: float) -> bool:
    while True:
        if _pg_state(pg) == "CREATED":
            return True
        if time.monotonic() >= deadline:  # wall-clock ok: waiting on Ray's scheduler
            return False
        time.sleep(0.1)  # wall-clock ok


def _homes_from_free(dead: list[int], free: dict[str, int]) -> dict[int, str]:
    """Greedy: the node with the most free slots first (ties by id), so the sockets stay together."""
    homes: dict[int, str] = {}
    left = dict(free)
    for s in dead:
        nid = max(sorted(left), key=lambda k: left[k]) if left else ""
        if not nid or left[nid] <= 0:
            break
        homes[s] = nid
        left[nid] -= 1
    return homes


def recover(node: Any, *, timeout_s: float = 60.0, ping_timeout_s: float = PING_TIMEOUT_S,
            align_clocks: bool = False) -> RecoveryReport:
    """Recreate the dead sockets of a :class:`RayNode` on the capacity left and reconnect everyone."""
    import ray
    from ray.util.scheduling_strategies import (
        NodeAffinitySchedulingStrategy,
        PlacementGroupSchedulingStrategy,
    )

    from sn40l_emu.cluster.placement import actor_name
    from sn40l_emu.socket_actor.actor import SocketActor
    from sn40l_emu.socket_actor.tile import Degradation

    dead = dead_sockets(node, ping_timeout_s)
    if not dead:
        return RecoveryReport(())
    alive = [i for i in range(node.n_sockets) if i not in dead]
    dropped, lost = flush_survivors(node, dead, max(1.0, timeout_s))
    clock_ns = 0
    if align_clocks:
        clock_ns = max(node._get([node.actors[i].clock_ns.remote() for i in alive], 60), default=0)
    use_res = ray.cluster_resources().get(SOCKET_RESOURCE, 0) > 0
    deadline = time.monotonic() + timeout_s  # wall-clock ok
    pg = node.placement_group
    strategies: dict[int, Any] = {}
    homes: dict[int, str] = {}
    if pg is not None:
        if _pg_state(pg) != "CREATED":
            free = sum(free_sockets_per_node().values()) if use_res else len(dead)
            if free < len(dead) or not _wait_pg(pg, deadline):
                raise NoCapacityError(len(dead), free, f"sockets {dead} lost their Ray node; "
                                      "add a Ray node advertising 'sn40l_socket' and call recover() again")
        table = _bundle_nodes(pg)
        for s in dead:
            strategies[s] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=s)
            homes[s] = table.get(s, "")
    else:
        free_map = free_sockets_per_node() if use_res else {n["NodeID"]: len(dead) for n in ray.nodes()
                                                            if n.get("Alive")}
        homes = _homes_from_free(dead, free_map)
        if len(homes) < len(dead):
            where = ", ".join(f"{k[:12]}: {v}" for k, v in sorted(free_map.items())) or "no alive Ray node"
            raise NoCapacityError(len(dead), sum(free_map.values()),
                                  f"sockets {dead} lost their Ray node; free per Ray node: {where}")
        for s, nid in homes.items():
            strategies[s] = NodeAffinitySchedulingStrategy(node_id=nid, soft=False)
    detached = bool(getattr(node, "detached", False))
    trace = bool(getattr(node, "trace", True))
    for s in dead:
        opts: dict[str, Any] = {"scheduling_strategy": strategies[s], "namespace": NAMESPACE}
        if use_res:
            opts["resources"] = {SOCKET_RESOURCE: 1}
        if node.name:
            opts["name"] = actor_name(node.name, s)
        if detached:
            opts["lifetime"] = "detached"
        node.actors[s] = SocketActor.options(**opts).remote(s, node.profile, node.n_sockets, trace)
    node.connect(max(1.0, deadline - time.monotonic()))  # wall-clock ok
    if clock_ns:
        node.advance_to(dead, clock_ns)
    for s in dead:
        node._degradations[s] = Degradation()
    node.version += 1
    if pg is not None:
        homes = {s: n or homes.get(s, "") for s, n in _actor_nodes(node, dead).items()}
    return RecoveryReport(tuple(dead), homes, clock_ns, dropped, lost)


def _bundle_nodes(pg: Any) -> dict[int, str]:
    from ray.util import placement_group_table

    return {int(k): str(v) for k, v in placement_group_table(pg).get("bundles_to_node_id", {}).items()}


def _actor_nodes(node: Any, sockets: list[int]) -> dict[int, str]:
    st = node._get([node.actors[s].status.remote() for s in sockets], 60)
    return {s: str(x.get("ray_node", "")) for s, x in zip(sockets, st, strict=True)}
