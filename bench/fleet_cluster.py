"""The fleet at scale: 8 emulated nodes (64 socket actors), 10,000 requests, on a 4-node
``ray.cluster_utils`` cluster on this machine (target: <= 60 s wall; memory reported).

The cluster: four Ray nodes on 127.0.0.1, each advertising 16 ``sn40l_socket``
slots (64 in all), started and stopped by this script. Then ``run_fleet``
(sn40l, llama2-7b, 100 experts, batch 8, Poisson 40 req/s, the three placement
policies) on the Ray backend: bring-up of the 64 actors (node by node across
the Ray nodes), cost measurement on node 0 and a probe on every other node,
then the global router over 10,000 requests per policy. Reported: wall time of
the whole run and of bring-up, the peak resident memory of this process
and every process it started (Ray's included), sampled every 0.5 s, and the CPU
seconds of those processes (last value seen per process, by kind): on 2 cores,
CPU-s / 2 is a floor under the wall time.

``--system-config`` adds Ray system config to the head's (a variant, for comparison);
``--no-bytecode`` runs without the package's ``__pycache__`` (every actor compiles our
modules from source, as before ``sn40l_emu/cluster/bytecode.py``; written again after).

    .venv/bin/python bench/fleet_cluster.py [--requests 10000] [--nodes 8] [--system-config JSON] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import RESULTS, children_cpu_s


def _rss_tree() -> int:
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _remember(seen: dict[int, tuple[str, float]], now: dict[int, tuple[str, float]]) -> None:
    """Keep each process's latest CPU seconds under a stable kind: an actor's title while it
    runs a method (``ray::SocketActorImpl.run_program``) counts as the actor's, and a process
    that is exiting (no command line left: ``?``) keeps the kind it was last seen as."""
    for pid, (name, cpu_s) in now.items():
        kind = name.split(".")[0] if name.startswith("ray::") else name
        if kind == "?" and pid in seen:
            kind = seen[pid][0]
        seen[pid] = (kind, cpu_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--ray-nodes", type=int, default=4)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--system-config", default="{}", help="Ray system config (JSON) on top of the emulator's")
    parser.add_argument("--no-bytecode", action="store_true", help="without the package's bytecode (comparison)")
    parser.add_argument("--json", default=str(RESULTS / "fleet_cluster.json"))
    args = parser.parse_args()
    system_config = json.loads(args.system_config)

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sn40lb-", dir="/tmp")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from sn40l_emu.cluster.bringup import (
        LOOPBACK,
        NAMESPACE,
        SOCKET_RESOURCE,
        lean_head,
        prepare_env,
    )

    prepare_env()  # writes the package's bytecode (compile_package), once per process
    if args.no_bytecode:
        from sn40l_emu.cluster.bytecode import PACKAGE_DIR

        for cache in PACKAGE_DIR.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
    import ray
    from ray.cluster_utils import Cluster

    from sn40l_emu.experiments.coe_fleet import run_fleet

    peak = [0]
    cpu_seen: dict[int, tuple[str, float]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_tree())
            _remember(cpu_seen, children_cpu_s())
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    slots = -(-args.nodes * 8 // args.ray_nodes)
    node_args: dict[str, Any] = {"num_cpus": 1, "resources": {SOCKET_RESOURCE: slots}, "node_ip_address": LOOPBACK}
    t0 = time.perf_counter()  # wall-clock ok: the benchmark
    cluster = None
    for attempt in range(3):  # Ray gives a raylet 30 s to register; a loaded machine can miss it
        try:
            with lean_head(node_args, system_config) as head_args:  # the head the emulator starts (bringup.py)
                cluster = Cluster(initialize_head=True, head_node_args=head_args)
            for _ in range(args.ray_nodes - 1):
                cluster.add_node(**node_args)
            cluster.wait_for_nodes(timeout=300)
            break
        except Exception as exc:
            print(f"# cluster start attempt {attempt + 1} failed: {str(exc).splitlines()[0]}")
            if cluster is not None:
                cluster.shutdown()
            cluster = None
    if cluster is None:
        stop.set()
        raise SystemExit("could not start the cluster_utils cluster")
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
        t_cluster = time.perf_counter() - t0  # wall-clock ok
        _remember(cpu_seen, children_cpu_s())
        cpu_cluster = round(sum(c for _, c in cpu_seen.values()), 1)
        t1 = time.perf_counter()  # wall-clock ok
        res = run_fleet(backend="ray", nodes=args.nodes, experts=100, batch=8, rate_per_s=40.0,
                        n_requests=args.requests)
        t_fleet = time.perf_counter() - t1  # wall-clock ok
        _remember(cpu_seen, children_cpu_s())
    finally:
        ray.shutdown()
        cluster.shutdown()
        stop.set()
        sampler.join()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        if args.no_bytecode:
            import compileall

            compileall.compile_dir(str(PACKAGE_DIR), quiet=2)
    actors = [c for n, c in cpu_seen.values() if n == "ray::SocketActorImpl"]
    out = {
        "nodes": args.nodes, "socket_actors": args.nodes * 8, "ray_nodes": args.ray_nodes,
        "requests": args.requests, "system_config": system_config, "bytecode": not args.no_bytecode,
        "host": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                                            "python": platform.python_version()},
        "wall_s": {"cluster_start": t_cluster, "fleet_run": t_fleet, "fleet_bringup": res["bringup_s"],
                   "fleet_parts": res.get("wall_s")},
        "peak_rss_bytes_all_processes": peak[0], "ray_nodes_used": res["ray_nodes_used"],
        "cpu_s": {"driver": round(time.process_time(), 1), "cluster_processes_at_start": cpu_cluster,
                  "all_started_processes": round(sum(c for _, c in cpu_seen.values()), 1),
                  "by_process_kind": {k: round(sum(c for n, c in cpu_seen.values() if n == k), 1)
                                      for k in sorted({n for n, _ in cpu_seen.values()})},
                  "processes": len(cpu_seen),
                  "socket_actor_median": round(statistics.median(actors), 2) if actors else None},
        "rows": [{k: r[k] for k in ("policy", "completed", "latency_p50_ns", "latency_p99_ns", "hit_rate")}
                 for r in res["rows"]],
        "target_wall_s": 60.0,
    }
    print(f"# fleet: {args.nodes} nodes ({args.nodes * 8} socket actors) on {args.ray_nodes} Ray nodes, "
          f"{args.requests} requests; {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"cluster start {t_cluster:.1f} s; fleet run {t_fleet:.1f} s wall "
          f"(bring-up {res['bringup_s']:.1f} s); peak RSS of all processes {peak[0] / 2**30:.2f} GiB")
    print(f"system config {system_config}, bytecode {not args.no_bytecode}; one socket actor "
          f"{out['cpu_s']['socket_actor_median']} CPU-s (median)")
    print(f"CPU: driver {out['cpu_s']['driver']} s, the {len(cpu_seen)} processes it started "
          f"{out['cpu_s']['all_started_processes']} s ({out['cpu_s']['by_process_kind']})")
    for r in out["rows"]:
        print(f"  {r['policy']:13s} completed {r['completed']}, p50 {r['latency_p50_ns'] / 1e6:.1f} ms, "
              f"p99 {r['latency_p99_ns'] / 1e6:.1f} ms")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
