"""Wall time of a real 64 MiB float32 ring all-reduce over 8 socket actors, next to baselines.

Measured in one run, interleaved round by round (so a busy host slows all
alike), medians reported:

* ring K=8 / K=64: ``node.run_programs`` of one ring ``CollectiveOp`` per socket
  (chunks per ring segment 8 or 64) over the socket actors' P2P path
  (same-host fast path);
* gather baseline: a coordinator ``ray.get``s the 8 arrays from the 8 actors,
  sums them with numpy and broadcasts the sum back with one ``ray.put``
  (each actor copies it into its store, as the ring leaves its result there);
* memcpy: ``np.copyto`` of the same 64 MiB in this process;
* one-process ring: the same ring arithmetic (reduce-scatter then all-gather
  over 8 chunks, in place, numpy) on 8 arrays in this process: the floor for
  any ring that really moves and adds the data;
* ring K=8 over the Ray actor-task path (``fast_p2p=False``), for reference.

Targets: ring wall <= 1.5x the gather baseline; K=64 <= 1.2x K=8; ring over the
actors <= 2x the one-process ring.

CPU time is reported next to wall time (``cpu_s``: the actor processes'
user + system time from /proc for the actor cases, this process's for the
in-process ones), since on a shared host the wall time of 8 processes that
step in lockstep mostly measures the other load; the load average is in the
JSON.
Prints a table and writes ``bench/results/allreduce_wall.json``.

    .venv/bin/python bench/allreduce_wall.py [--rounds 7] [--mib 64]
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

from benchlib import RESULTS, proc_cpu_s

NAME = "wallbench"


def _ring_programs(n: int, count: int, chunks: int) -> dict[int, Any]:
    from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp, Program

    op = CollectiveOp(f"ring-k{chunks}", CollectiveKind.ALL_REDUCE, tuple(range(n)), (count,), "float32",
                      algo=Algo.RING, chunks=chunks, buffer=NAME)
    return {s: Program.of(f"ring k={chunks}", [op]) for s in range(n)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after 2 warm-up rounds)")
    parser.add_argument("--mib", type=int, default=64, help="all-reduce size in MiB (float32)")
    parser.add_argument("--no-ray-path", action="store_true", help="skip the Ray actor-task path reference")
    parser.add_argument("--json", default=str(RESULTS / "allreduce_wall.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env, start_local_ray

    prepare_env()
    import numpy as np
    import ray

    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile

    profile = load_profile("sn40l")
    n = profile.sockets
    count = args.mib * 1024**2 // 4
    size = count * 4
    handle = start_local_ray(num_cpus=2)
    node = RayNode.create(profile, trace=False)
    try:
        inputs = {s: np.random.default_rng(s).standard_normal(count, dtype=np.float32) for s in range(n)}
        expected = np.sum([inputs[s].astype(np.float64) for s in range(n)], axis=0)
        node.load_tensors({s: {NAME: inputs[s]} for s in range(n)})
        programs = {k: _ring_programs(n, count, k) for k in (8, 64)}

        # correctness once, on fresh inputs
        node.run_programs(programs[8])
        got = node.get_tensors(0, [NAME])[NAME].astype(np.float64)
        tol = n * np.finfo(np.float32).eps * np.sum([np.abs(inputs[s]) for s in range(n)], axis=0)
        wrong = int(np.count_nonzero(np.abs(got - expected) > tol))
        del got, tol, expected

        pids = ray.get([a.ping.remote() for a in node.actors])
        cpu: dict[str, list[float]] = {}

        def ring(k: int) -> float:
            c0 = sum(proc_cpu_s(p) for p in pids)
            began = time.perf_counter()
            node.run_programs(programs[k])
            wall = time.perf_counter() - began
            cpu.setdefault(f"ring K={k}", []).append(sum(proc_cpu_s(p) for p in pids) - c0)
            return wall

        def gather() -> float:
            began = time.perf_counter()
            arrays = ray.get([a.get_tensors.remote([NAME]) for a in node.actors])
            acc = arrays[0][NAME].copy()
            for part in arrays[1:]:
                acc += part[NAME]
            ref = ray.put({NAME: acc})
            ray.get([a.load_tensors.remote(ref) for a in node.actors])
            return time.perf_counter() - began

        src = inputs[0]
        dst = np.empty_like(src)

        def memcpy() -> float:
            began = time.perf_counter()
            np.copyto(dst, src)
            return time.perf_counter() - began

        bufs = [inputs[s].copy() for s in range(n)]

        def one_process_ring() -> float:
            for s in range(n):  # fresh inputs, outside the timed part
                np.copyto(bufs[s], inputs[s])
            c0 = time.process_time()
            began = time.perf_counter()
            chunks = [np.array_split(b, n) for b in bufs]
            for step in range(n - 1):  # reduce-scatter: rank r adds its chunk into rank r+1's
                for r in range(n):
                    c = (r - step) % n
                    np.add(chunks[(r + 1) % n][c], chunks[r][c], out=chunks[(r + 1) % n][c])
            for step in range(n - 1):  # all-gather: rank r passes its reduced chunk on
                for r in range(n):
                    c = (r + 1 - step) % n
                    np.copyto(chunks[(r + 1) % n][c], chunks[r][c])
            wall = time.perf_counter() - began
            cpu.setdefault("one-process ring (numpy)", []).append(time.process_time() - c0)
            return wall

        cases = {"ring K=8": lambda: ring(8), "ring K=64": lambda: ring(64), "gather-sum-scatter": gather,
                 "numpy memcpy": memcpy, "one-process ring (numpy)": one_process_ring}
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(2 + args.rounds):
            if r == 2:
                cpu.clear()  # warm-up rounds out
            for label, fn in cases.items():
                t = fn()
                if r >= 2:
                    samples[label].append(t)

        if not args.no_ray_path:  # the actor-task path, for reference (fewer rounds: it is slow)
            node.connect(fast_p2p=False)
            fast8 = cpu.pop("ring K=8")
            ray_path = [ring(8) for _ in range(1 + max(2, args.rounds // 2))][1:]
            samples["ring K=8, Ray actor-task path"] = ray_path
            cpu["ring K=8, Ray actor-task path"] = cpu.pop("ring K=8")[1:]
            cpu["ring K=8"] = fast8
            node.connect(fast_p2p=True)
    finally:
        node.close()
        handle.shutdown()

    med = {k: statistics.median(v) for k, v in samples.items()}
    ring8, ring64, base = med["ring K=8"], med["ring K=64"], med["gather-sum-scatter"]
    one = med["one-process ring (numpy)"]
    checks = {
        "ring K=8 <= 1.5 x gather": ring8 <= 1.5 * base,
        "ring K=8 <= 2 x one-process ring": ring8 <= 2 * one,
        "ring K=64 <= 1.2 x ring K=8": ring64 <= 1.2 * ring8,
        "ring result correct": wrong == 0,
    }
    print(f"# {args.mib} MiB float32 all-reduce, {n} socket actors, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds")
    print(f"{'case':34s} {'wall (ms)':>10s} {'min':>8s} {'max':>8s} {'x gather':>9s} {'GB/s':>7s}")
    for label, vals in samples.items():
        print(f"{label:34s} {1e3 * med[label]:10.1f} {1e3 * min(vals):8.1f} {1e3 * max(vals):8.1f} "
              f"{med[label] / base:9.2f} {size / med[label] / 1e9:7.2f}")
    cpu_med = {k: statistics.median(v) for k, v in cpu.items() if v}
    for label, c in cpu_med.items():
        print(f"# CPU (median): {label}: {1e3 * c:.1f} ms, {c / cpu_med['one-process ring (numpy)']:.2f}x "
              "the one-process ring's")
    for what, ok in checks.items():
        print(f"# {what}: {'PASS' if ok else 'FAIL'}")
    out = {
        "size_bytes": size, "dtype": "float32", "sockets": n, "rounds": args.rounds,
        "host": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "python": platform.python_version()},
        "wall_s": {k: {"median": med[k], "min": min(v), "max": max(v), "samples": v} for k, v in samples.items()},
        "ratios": {"ring8_over_gather": ring8 / base, "ring64_over_ring8": ring64 / ring8,
                   "ring8_over_one_process_ring": ring8 / one,
                   "ring8_cpu_over_one_process_ring_cpu": cpu_med["ring K=8"] / cpu_med["one-process ring (numpy)"]},
        "cpu_s": {k: {"median": cpu_med[k], "samples": v} for k, v in cpu.items() if v},
        "checks": checks, "wrong": wrong,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"# wrote {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
