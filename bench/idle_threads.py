"""Which threads use CPU while a node's socket actors sit idle (per-thread ``/proc`` counters).

Starts a private local Ray as the emulator does (``start_local_ray``), creates one
SN40L node (8 socket actors), runs one small program so every actor and link is warm,
lets it settle for ``--settle-s``, then reads the run time (``/proc/PID/task/TID/schedstat``)
and name (``comm``) of every thread of every process this one started, before and
after ``--idle-s`` seconds in which nothing is asked of the node. Reported: CPU
milliseconds per second of idling, per socket actor (the mean over the 8, split by
thread name) and per Ray process kind (GCS, raylet, agents, idle pre-started workers).

Threads are reported by name (``comm``: what Ray and gRPC set, such as ``worker.io``,
the core worker's I/O thread; Python threads keep the process's name, for an actor
``ray::SocketActo``: its asyncio loop and Ray's GC thread), the main thread as ``main``
(in an actor, Ray's task loop); a name shared by several threads of one process is summed.

``--compare JSON`` runs every round a second time with that Ray system config added to
the emulator's (each on a Ray of its own), for a same-run comparison.

    .venv/bin/python bench/idle_threads.py [--idle-s 20] [--settle-s 5] [--rounds 1] [--compare JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchlib import RESULTS, children_cpu_s, git_rev, write_json

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, summed by thread name.

    From ``schedstat`` (the scheduler's run time in ns) where the kernel has it, else
    from ``stat`` (utime + stime in clock ticks, 10 ms: too coarse for a thread that
    wakes 100 times a second for 70 us).
    """
    out: dict[str, float] = defaultdict(float)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            stat = (task / "stat").read_text()
            try:
                cpu_s = int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                fields = stat.rsplit(")", 1)[1].split()
                cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            continue
        name = "main" if tid == str(pid) else stat[stat.index("(") + 1:stat.rindex(")")]
        out[name] += cpu_s
    return dict(out)


def snapshot(pids: dict[int, str]) -> dict[int, dict[str, float]]:
    return {pid: thread_cpu_s(pid) for pid in pids}


def measure(idle_s: float, settle_s: float, system_config: dict[str, Any]) -> dict[str, Any]:
    """One private Ray with ``system_config`` on top of the emulator's; CPU per thread over ``idle_s``."""
    from sn40l_emu.cluster import bringup

    saved = dict(bringup.LEAN_SYSTEM_CONFIG)
    bringup.LEAN_SYSTEM_CONFIG.update(system_config)  # the bench's variant; restored below
    try:
        local = bringup.start_local_ray(num_cpus=2, sockets=16)
    finally:
        bringup.LEAN_SYSTEM_CONFIG.clear()
        bringup.LEAN_SYSTEM_CONFIG.update(saved)
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    try:
        node = RayNode.create(load_profile("sn40l"), trace=False)
        try:
            op = CollectiveOp("warm", CollectiveKind.ALL_REDUCE, tuple(range(8)), (1024,), "float32")
            node.run_programs({s: Program.of("warm", [op]) for s in range(8)})
            time.sleep(settle_s)  # wall-clock ok: the bench idles on purpose
            actors = set(node.pids())
            kinds = {pid: ("socket_actor" if pid in actors else name) for pid, (name, _) in children_cpu_s().items()}
            load0 = os.getloadavg()
            before = snapshot(kinds)
            t0 = time.perf_counter()  # wall-clock ok: the bench's own interval
            time.sleep(idle_s)  # wall-clock ok
            elapsed = time.perf_counter() - t0  # wall-clock ok
            after = snapshot(kinds)
            load1 = os.getloadavg()
        finally:
            node.close()
    finally:
        local.shutdown()

    per_thread: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_kind: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for pid, kind in kinds.items():
        count[kind] += 1
        for name, cpu in after.get(pid, {}).items():
            d = cpu - before.get(pid, {}).get(name, 0.0)
            per_thread[kind][name] += d
            per_kind[kind] += d
    ms_per_s = {k: round(1e3 * v / elapsed, 2) for k, v in per_kind.items()}
    actor_threads = {k: round(1e3 * v / elapsed / max(1, count["socket_actor"]), 2)
                     for k, v in sorted(per_thread["socket_actor"].items(), key=lambda kv: -kv[1]) if v > 0}
    return {
        "system_config": system_config, "idle_s": round(elapsed, 2), "socket_actors": count["socket_actor"],
        "cpu_ms_per_s_by_process_kind": ms_per_s, "processes_by_kind": dict(count),
        "socket_actor_cpu_ms_per_s_each": round(ms_per_s.get("socket_actor", 0.0) / max(1, count["socket_actor"]), 2),
        "socket_actor_threads_ms_per_s_each": actor_threads,
        "ray_threads_ms_per_s": {k: {n: round(1e3 * v / elapsed, 2) for n, v in t.items() if v > 0}
                                 for k, t in per_thread.items() if k != "socket_actor"},
        "load_avg_before": load0, "load_avg_after": load1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--compare", default="",
                    help="a JSON object of Ray system config: each round also runs with it, for a same-run ratio")
    ap.add_argument("--json", default=str(RESULTS / "idle_threads.json"))
    args = ap.parse_args()

    variants: list[dict[str, Any]] = [{}] + ([json.loads(args.compare)] if args.compare else [])
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for cfg in variants:
            r = measure(args.idle_s, args.settle_s, cfg)
            runs.append(r)
            print(f"{json.dumps(cfg) or '{}'}: idle {r['idle_s']} s, load avg {r['load_avg_before'][0]:.1f} -> "
                  f"{r['load_avg_after'][0]:.1f}; CPU ms per second of idling:")
            for k, v in sorted(r["cpu_ms_per_s_by_process_kind"].items(), key=lambda kv: -kv[1]):
                print(f"  {k:28s} {v:7.2f}  ({r['processes_by_kind'][k]} process(es))")
            print(f"  one socket actor: {r['socket_actor_cpu_ms_per_s_each']} ms/s, by thread: "
                  f"{r['socket_actor_threads_ms_per_s_each']}")
    doc: dict[str, Any] = {
        "bench": "idle_threads", "runs": runs,
        "socket_actor_cpu_ms_per_s_each_median": {
            json.dumps(cfg): statistics.median(r["socket_actor_cpu_ms_per_s_each"] for r in runs
                                               if r["system_config"] == cfg) for cfg in variants},
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_") and "TOKEN" not in k},
        "git": git_rev(),
    }
    print("median ms/s per idle socket actor:", doc["socket_actor_cpu_ms_per_s_each_median"])
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
