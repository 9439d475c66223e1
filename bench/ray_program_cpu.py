"""CPU per program on the Ray path: the driver and each socket actor, vs in-process.

Runs the same small program -- a 4 KiB (bfloat16, 2,048 elements), 8-rank
all-reduce on every socket of an SN40L node -- ``--programs`` times on a
:class:`RayNode` (8 socket actors on a private local Ray) and on a
:class:`LocalNode` in this process, and reports per program:

* ``driver_cpu_ms``: this process's CPU (``time.process_time``);
* ``actor_cpu_ms``: the mean over the 8 actor processes of their CPU
  (``/proc/PID/stat`` utime + stime), so the whole node spends
  ``driver + 8 x actor``;
* ``wall_ms``; and the in-process CPU and wall for the same program;
* ``empty_*``: the same for a program with no op at all on Ray (the floor that one
  actor call per socket costs, whatever the program).

Also the actors' CPU while idle (``--idle-s`` seconds with no program), which
shows whether anything polls. The results' virtual nanoseconds must agree
between the backends (checked: the run fails otherwise). Load averages are
recorded: on a shared 2-core host the wall figures move with them, the CPU
figures much less.

Prints a table and writes ``bench/results/ray_program_cpu.json``.

    .venv/bin/python bench/ray_program_cpu.py [--programs 300] [--rounds 2] [--idle-s 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchlib import RESULTS, git_rev, proc_cpu_s


def _programs(empty: bool = False) -> dict[int, Any]:
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    group = tuple(range(8))
    if empty:  # no op at all: what one actor call per socket costs by itself
        return {i: Program.of("empty", []) for i in group}
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (2048,), "bfloat16")
    return {i: Program.of("ar-4k", [op]) for i in group}


def _run(node: Any, n: int, pids: list[int], empty: bool = False) -> tuple[dict[str, float], list[int]]:
    progs = _programs(empty)
    ends: list[int] = []
    a0 = [proc_cpu_s(p) for p in pids]
    c0, t0 = time.process_time(), time.perf_counter()  # wall-clock ok (bench)
    for _ in range(n):
        res = node.run_programs(progs)
        ends.append(max(r.end_ns for r in res.values()))
    c1, t1 = time.process_time(), time.perf_counter()  # wall-clock ok (bench)
    a1 = [proc_cpu_s(p) for p in pids]
    out = {"wall_ms": 1e3 * (t1 - t0) / n, "driver_cpu_ms": 1e3 * (c1 - c0) / n}
    if pids:
        out["actor_cpu_ms"] = 1e3 * sum(b - a for a, b in zip(a0, a1, strict=True)) / n / len(pids)
    return out, ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--json", default=str(RESULTS / "ray_program_cpu.json"))
    args = ap.parse_args()

    from sn40l_emu.cluster.bringup import start_local_ray

    ray_local = start_local_ray(num_cpus=2, sockets=16)
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile

    profile = load_profile("sn40l")
    load = {"start": list(os.getloadavg())}
    rounds: list[dict[str, Any]] = []
    node = RayNode.create(profile, name="bench-ray-program-cpu", trace=False)
    local = LocalNode(profile, trace=False)
    try:
        pids = node.pids()
        node.run_programs(_programs())  # connections and first-use costs out of the figures
        local.run_programs(_programs())
        for _ in range(args.rounds):
            ray_fig, ray_ends = _run(node, args.programs, pids)
            loc_fig, loc_ends = _run(local, args.programs, [])
            if ray_ends != loc_ends:
                raise SystemExit("Ray and in-process nanoseconds differ")
            empty_fig, _ = _run(node, args.programs, pids, empty=True)
            rounds.append({"ray": ray_fig, "local": loc_fig, "ray_empty": empty_fig, "loadavg": list(os.getloadavg())})
        a0 = [proc_cpu_s(p) for p in pids]
        time.sleep(args.idle_s)  # wall-clock ok (bench: idle actors' CPU)
        a1 = [proc_cpu_s(p) for p in pids]
        idle_ms_per_s = 1e3 * sum(b - a for a, b in zip(a0, a1, strict=True)) / len(pids) / args.idle_s
    finally:
        node.close()
        local.close()
        ray_local.shutdown()
    load["end"] = list(os.getloadavg())

    def med(backend: str, key: str) -> float:
        return round(statistics.median(r[backend][key] for r in rounds), 3)

    summary = {k: med("ray", k) for k in ("wall_ms", "driver_cpu_ms", "actor_cpu_ms")}
    summary |= {f"local_{k}": med("local", k) for k in ("wall_ms", "driver_cpu_ms")}
    summary |= {f"empty_{k}": med("ray_empty", k) for k in ("wall_ms", "driver_cpu_ms", "actor_cpu_ms")}
    summary["node_cpu_ms"] = round(summary["driver_cpu_ms"] + 8 * summary["actor_cpu_ms"], 3)
    summary["cpu_ratio"] = round(summary["node_cpu_ms"] / summary["local_driver_cpu_ms"], 2)
    summary["idle_actor_cpu_ms_per_s"] = round(idle_ms_per_s, 3)
    out = {"git": git_rev(), "host": platform.node(), "cpus": os.cpu_count(), "programs": args.programs,
           "program": "all-reduce, 2048 bfloat16 (4 KiB), 8 sockets, sn40l", "summary": summary,
           "rounds": rounds, "loadavg": load}
    print(f"{'per program':<28}{'Ray':>10}{'in-process':>12}")
    print(f"{'wall ms':<28}{summary['wall_ms']:>10.2f}{summary['local_wall_ms']:>12.2f}")
    print(f"{'driver CPU ms':<28}{summary['driver_cpu_ms']:>10.2f}{summary['local_driver_cpu_ms']:>12.2f}")
    print(f"{'CPU ms per actor':<28}{summary['actor_cpu_ms']:>10.2f}")
    print(f"{'node CPU ms (driver+8 actors)':<28}{summary['node_cpu_ms']:>10.2f}  ({summary['cpu_ratio']}x)")
    print(f"{'empty program on Ray':<28} wall {summary['empty_wall_ms']:.2f} ms, driver CPU "
          f"{summary['empty_driver_cpu_ms']:.2f} ms, CPU per actor {summary['empty_actor_cpu_ms']:.2f} ms")
    print(f"idle actor CPU {summary['idle_actor_cpu_ms_per_s']} ms per s; load {load}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
