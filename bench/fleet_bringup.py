"""Fleet bring-up, node by node vs all nodes' actors at once, in the same run.

On a ``ray.cluster_utils`` cluster on this machine (``--ray-nodes`` Ray nodes on
127.0.0.1, each advertising its share of ``sn40l_socket`` slots and one CPU, as
``bench/fleet_cluster.py`` starts it), ``--nodes`` emulated nodes of 8 socket
actors are brought up twice per round, torn down in between:

* ``one_by_one``: ``RayNode.create`` per node, each waiting for its own 8 actors
  before the next node is asked for (the fleet's bring-up before);
* ``all_at_once``: every node's actors asked for first (``wire=False``), then each
  node wired (what :func:`sn40l_emu.coe.fleet_nodes.open_fleet` does now). A
  raylet starts as many worker processes at a time as it has CPUs, so node by
  node kept all but one raylet idle.

With ``--bytecode``, the two modes are instead node by node with and without the
package's ``__pycache__`` (removed before each ``no_bytecode`` bring-up, written again
before each ``bytecode`` one): what ``sn40l_emu/cluster/bytecode.py`` changes, on one
cluster, so both modes meet the same Ray processes.

Reported per mode: wall seconds, CPU seconds of one actor process (median), and the
1-minute load average after each bring-up. The order of the two modes alternates between
rounds. Prints a table and writes ``bench/results/fleet_bringup.json``
(``fleet_bringup_bytecode.json`` with ``--bytecode``).

    .venv/bin/python bench/fleet_bringup.py [--nodes 4] [--ray-nodes 4] [--rounds 1] [--bytecode]
"""

from __future__ import annotations

import argparse
import compileall
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import RESULTS, proc_cpu_s


def bring_up(n_nodes: int, together: bool) -> dict[str, float]:
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.coe.fleet_nodes import ray_homes
    from sn40l_emu.config import load_profile

    prof = load_profile("sn40l")
    homes = ray_homes(n_nodes, prof.sockets)
    assert homes is not None
    t0 = time.perf_counter()  # wall-clock ok: the benchmark
    nodes = []
    try:
        for i in range(n_nodes):
            nodes.append(RayNode.create(prof, name=f"fb{os.getpid()}-{int(together)}-{i}",
                                        node_ids=[homes[i]] * prof.sockets, trace=False, wire=not together))
        if together:
            for node in nodes:
                node.connect(120.0 * n_nodes)
        wall = time.perf_counter() - t0  # wall-clock ok
        cpu = statistics.median(proc_cpu_s(p) for node in nodes for p in node.pids())
    finally:
        for node in nodes:
            node.close()
    time.sleep(2)  # let the killed actors' slots come back
    return {"wall_s": round(wall, 2), "actor_cpu_s": round(cpu, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--ray-nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bytecode", action="store_true",
                        help="compare node by node with and without the package's bytecode instead")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    args.json = args.json or str(RESULTS / ("fleet_bringup_bytecode.json" if args.bytecode else "fleet_bringup.json"))
    modes = ("bytecode", "no_bytecode") if args.bytecode else ("one_by_one", "all_at_once")

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sn40lfb-", dir="/tmp")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from sn40l_emu.cluster.bringup import (
        LOOPBACK,
        NAMESPACE,
        SOCKET_RESOURCE,
        lean_head,
        prepare_env,
    )
    from sn40l_emu.cluster.bytecode import PACKAGE_DIR

    prepare_env()  # writes the package's bytecode once (compile_package)
    import ray
    from ray.cluster_utils import Cluster

    slots = -(-args.nodes * 8 // args.ray_nodes)
    node_args: dict[str, Any] = {"num_cpus": 1, "resources": {SOCKET_RESOURCE: slots}, "node_ip_address": LOOPBACK}
    with lean_head(node_args) as head_args:  # the head the emulator starts (bringup.py)
        cluster = Cluster(initialize_head=True, head_node_args=head_args)
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    loads = []
    try:
        for _ in range(args.ray_nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes(timeout=300)
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                if mode == "no_bytecode":
                    for cache in PACKAGE_DIR.rglob("__pycache__"):
                        shutil.rmtree(cache, ignore_errors=True)
                elif mode == "bytecode":
                    compileall.compile_dir(str(PACKAGE_DIR), quiet=2)
                loads.append(os.getloadavg()[0])
                samples[mode].append(bring_up(args.nodes, mode == "all_at_once"))
                samples[mode][-1]["load_avg_after"] = round(os.getloadavg()[0], 1)
    finally:
        if args.bytecode:
            compileall.compile_dir(str(PACKAGE_DIR), quiet=2)
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    med = {m: {k: statistics.median(s[k] for s in v) for k in v[0]} for m, v in samples.items()}
    ratio = med[modes[1]]["wall_s"] / med[modes[0]]["wall_s"]
    out = {"nodes": args.nodes, "socket_actors": args.nodes * 8, "ray_nodes": args.ray_nodes,
           "rounds": args.rounds, "median": med, "samples": samples,
           f"ratio_{modes[1]}_over_{modes[0]}": round(ratio, 3),
           "host": {"cpus": os.cpu_count(), "loadavg_1m_per_sample": loads,
                    "python": platform.python_version()}}
    print(f"# fleet bring-up, {args.nodes} nodes ({args.nodes * 8} socket actors) on {args.ray_nodes} Ray "
          f"nodes, {os.cpu_count()} CPUs, load avg {statistics.mean(loads):.1f}; medians of {args.rounds}")
    for mode, m in med.items():
        print(f"  {mode:12s} wall {m['wall_s']:7.1f} s   CPU per actor {m['actor_cpu_s']:.2f} s")
    print(f"  {modes[1]} / {modes[0]}: {ratio:.2f}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
