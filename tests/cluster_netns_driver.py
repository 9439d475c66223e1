"""Driver run by test_cluster_netns.py inside the head's network namespace.

``cluster_netns_driver.py ADDRESS HEAD_PID WORKER_PID``: joins the cluster,
creates an 8-socket node spread over its Ray nodes, runs one functional TP8
all-reduce of rank-tagged data and, while everything is still connected,
lists every TCP/UDP endpoint of the processes the test started (the sessions
of the two ``ray start`` pids) and of this driver. Prints one ``RESULT`` JSON
line.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(address: str, head_pid: int, worker_pid: int) -> int:
    from sn40l_emu.cluster.bringup import connect
    from sn40l_emu.cluster.netcheck import endpoints, foreign, namespace_addresses, process_tree
    from sn40l_emu.cluster.placement import parse_placement
    from sn40l_emu.cluster.ray_node import create_node
    from sn40l_emu.config import load_profile
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    connect(address)
    import ray

    prof = load_profile("sn40l")
    node = create_node(prof, parse_placement("spread", 8), n_sockets=8, timeout_s=120)
    try:
        group = tuple(range(8))
        node.load_tensors({i: {"x": np.full(4096, i + 1, dtype=np.float32)} for i in group})
        op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (4096,), "float32", buffer="x")
        res = node.run_programs({i: Program.of("tp8-allreduce", [op]) for i in group})
        sums = [float(node.get_tensors(i, ["x"])["x"][0]) for i in group]
        st = node.status()
        pids = process_tree([os.getpid(), head_pid, worker_pid], sessions=[head_pid, worker_pid])
        eps = endpoints(pids)
        own = namespace_addresses(head_pid) | namespace_addresses(worker_pid)
        ns_ips = {a for a in own if a not in ("127.0.0.1", "::1") and not a.startswith("fe80:")}
        out = {
            "driver_pid": os.getpid(),
            "ray_nodes": [s["ray_node"] for s in st],
            "node_ips": {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]},
            "sums": sums,
            "collective_ns": [res[i].breakdown_ns["collectives"] for i in group],
            "n_processes": len(pids),
            "n_endpoints": len(eps),
            "cross_namespace": sum(e.connected and e.local in ns_ips and e.remote in ns_ips
                                   and e.local != e.remote for e in eps),
            # the namespaces hold only the addresses the test gave them, so a wildcard
            # listener inside them is reachable on those alone
            "foreign": [str(e) for e in foreign(eps, own, wildcard_ok=True)],
        }
    finally:
        node.close()
    print("RESULT " + json.dumps(out), flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
