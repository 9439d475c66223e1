"""The fleet on a four-Ray-node cluster, run by test_fleet_cluster.py in a subprocess of its own.

A ``ray.cluster_utils.Cluster`` of four Ray nodes on 127.0.0.1, each
advertising 8 ``sn40l_socket`` (32 sockets), hosts a fleet of four emulated
nodes; the same fleet then runs in this process without Ray. Writes both
results (or a traceback) to the JSON file named by argv[1]. Every wait is
bounded; nothing here is timed against a limit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sn40lf-", dir="/tmp")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

RAY_NODES = 4
SOCKETS_PER_RAY_NODE = 8
FLEET = {"nodes": 4, "experts": 24, "n_requests": 300, "rate_per_s": 40.0, "batch": 4, "tokens": 3}


def main(out_path: str) -> int:
    from sn40l_emu.cluster.bringup import LOOPBACK, NAMESPACE, SOCKET_RESOURCE, prepare_env

    prepare_env()
    import ray
    from ray.cluster_utils import Cluster

    from sn40l_emu.experiments.coe_fleet import run_fleet

    out: dict[str, Any] = {}
    node_args = {"num_cpus": 1, "resources": {SOCKET_RESOURCE: SOCKETS_PER_RAY_NODE},
                 "node_ip_address": LOOPBACK}
    try:  # Ray gives a raylet 30 s to register: a loaded machine can miss that, and the test retries
        cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    except Exception:
        Path(out_path).write_text(json.dumps({"startup_error": traceback.format_exc()}))
        return 0
    try:
        try:
            for _ in range(RAY_NODES - 1):
                cluster.add_node(**node_args)
            cluster.wait_for_nodes(timeout=120)
        except Exception:
            out["startup_error"] = traceback.format_exc()
            return 0
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
        out["ray_node_ids"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        try:
            out["ray"] = run_fleet(backend="ray", **FLEET)  # type: ignore[arg-type]
        except Exception:
            out["ray"] = {"error": traceback.format_exc()}
        ray.shutdown()
        out["local"] = run_fleet(backend="local", **FLEET)  # type: ignore[arg-type]
    except Exception:
        out["error"] = traceback.format_exc()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        Path(out_path).write_text(json.dumps(out, indent=1, default=str))
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
