"""Where a fleet's experts live and which node serves a request: the global router's policies.

- ``hash``: static hashing. Expert e lives on one home node,
  ``home(e) = (e * 2654435761 mod 2**32) mod N`` (Knuth's multiplicative hash,
  so consecutive ids spread out), and every request for e goes there.
- ``popularity``: popularity-based replication. Every expert keeps its home
  node; an expert that draws a share s of the requests gets
  ``ceil(s * N)`` replicas (at most N) on the nodes after its home, and a
  request goes to the replica with the least outstanding work. Popularity is
  the request counts of the run's arrival stream (an operator's profile of the
  workload).
- ``least-loaded``: every node holds every expert (its DDR / host copy; the HBM
  cache decides what is fast), and a request goes to the node with the least
  outstanding work.

Ties in outstanding work go to the lower node index, so a run is
deterministic. A node can hold at most ``capacity`` experts (the node's
``total_experts``); replicas beyond that are not placed, and a placement that
cannot give every expert one home raises :class:`FleetCapacityError`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from enum import Enum

from sn40l_emu.errors import ConfigError, EmuError


class FleetPolicy(str, Enum):
    HASH = "hash"
    POPULARITY = "popularity"
    LEAST_LOADED = "least-loaded"


class FleetCapacityError(EmuError):
    """The fleet's nodes cannot hold the composition under this placement."""


def home_node(expert: int, n_nodes: int) -> int:
    return ((expert * 2654435761) % (1 << 32)) % n_nodes


def place_experts(policy: FleetPolicy, n_experts: int, n_nodes: int, capacity: int,
                  requested: Sequence[int] = ()) -> list[tuple[int, ...]]:
    """Per expert, the nodes holding it (home first); ``requested``: the run's expert ids."""
    if n_nodes < 1:
        raise ConfigError("nodes", n_nodes, "an integer >= 1")
    held = [0] * n_nodes
    where: list[list[int]] = [[] for _ in range(n_experts)]
    if policy is FleetPolicy.LEAST_LOADED and n_experts <= capacity:
        return [tuple(range(n_nodes))] * n_experts
    for e in range(n_experts):  # one home each (least-loaded beyond capacity: hashed like hash)
        h = home_node(e, n_nodes)
        if held[h] >= capacity:
            raise FleetCapacityError(
                f"{n_experts} experts on {n_nodes} nodes: node {h} would hold more than "
                f"{capacity} (its capacity)")
        where[e].append(h)
        held[h] += 1
    if policy is FleetPolicy.POPULARITY and requested:
        counts = Counter(requested)
        total = sum(counts.values())
        for e, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            want = min(n_nodes, math.ceil(c / total * n_nodes))
            node = where[e][0]
            for step in range(1, n_nodes):
                if len(where[e]) >= want:
                    break
                cand = (node + step) % n_nodes
                if held[cand] < capacity:
                    where[e].append(cand)
                    held[cand] += 1
    return [tuple(w) for w in where]


def held_per_node(placement: Sequence[tuple[int, ...]], n_nodes: int) -> list[int]:
    out = [0] * n_nodes
    for nodes in placement:
        for n in nodes:
            out[n] += 1
    return out
