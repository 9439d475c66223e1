"""The fleet scenario of the shared cluster run (``cluster_scenarios.py``, last scenario).

Four Ray nodes on 127.0.0.1, each advertising 8 ``sn40l_socket`` (32 sockets),
host a fleet of four emulated nodes; the same fleet then runs in the same
process without Ray. The cluster is the one the earlier scenarios used: by now
it has a head and the spare that replaced the lost worker, so this scenario
closes the 16-socket node, adds Ray nodes until four are alive, and waits until
all 32 slots are free again. Every wait is bounded; nothing here is timed
against a limit. test_fleet_cluster.py asserts on what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RAY_NODES = 4
FLEET = {"nodes": 4, "experts": 24, "n_requests": 300, "rate_per_s": 40.0, "batch": 4, "tokens": 3}


def scenario_fleet(state: dict[str, Any], add_ray_node: Callable[[], Any],
                   settle: Callable[[int], None], sockets_per_ray_node: int) -> dict[str, Any]:
    from sn40l_emu.cluster.placement import alive_nodes
    from sn40l_emu.experiments.coe_fleet import run_fleet

    node = state.pop("node16", None)
    if node is not None:  # the earlier scenarios' 16-socket node: its slots go to the fleet
        node.close()
    for _ in range(RAY_NODES - len(alive_nodes())):
        add_ray_node()
    settle(RAY_NODES * sockets_per_ray_node)
    out: dict[str, Any] = {"ray_node_ids": sorted(n["NodeID"] for n in alive_nodes())}
    out["ray"] = run_fleet(backend="ray", **FLEET)  # type: ignore[arg-type]
    out["local"] = run_fleet(backend="local", **FLEET)  # type: ignore[arg-type]
    return out
