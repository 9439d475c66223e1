"""Wall time of the default ``coe`` sweep on Ray vs in-process, measured in the same run.

Both backends run the same sweep (``SweepConfig()``'s defaults: 3 platforms x
72 rows, trace on) in this process, one after the other, ``--rounds`` times
interleaved (a busy host slows both alike); medians reported. The rows' virtual
nanoseconds must be identical (checked: the run fails otherwise).

For the Ray sweep the wall time is split into where it goes:

* ``ray_start_s``: starting the private local Ray;
* ``node_create_s``: creating the first node's 8 socket actors and wiring them;
* ``reprofile_s``: power-cycling the same actors into the next platforms' sockets;
* ``actor_calls`` / ``actor_wait_s``: how many ``ray.get`` rounds the node made
  and how long the driver waited in them (the rest is driver-side Python);
* ``answered``: steps the node answered from its replay book without a call
  (repeats since a power-cycle, ``cluster/replay.py``);
* ``cpu_s_driver_start`` / ``cpu_s_driver_rows``: this process's CPU while Ray
  started and the first node was created, and the rest (the rows);
* ``ratio_without_bringup``: the Ray sweep less Ray's start and the first
  node's creation (what attaching to a node left up by ``sn40l-emu up`` saves);
* ``cpu_s``: CPU seconds of each sweep, this process plus every process it started
  (Ray's, sampled every 0.5 s while they run): on a shared host a Ray sweep's nine
  processes get more of the CPU than the one in-process sweep, so wall ratios
  there flatter Ray; the CPU ratio does not.

``--seeds`` sets the seeds per row (the sweep's default is 5).

Target: Ray wall <= 1.5x the in-process wall. Prints a table and writes
``bench/results/coe_sweep_wall.json``.

    .venv/bin/python bench/coe_sweep_wall.py [--rounds 1] [--experts 1,10,25,50,100,150]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import threading
import time
from typing import Any

from benchlib import RESULTS, git_rev, write_json

TIMED = ("total_ns", "router_ns", "switch_ns", "program_load_ns", "argument_load_ns", "host_ns", "expert_ns", "load_ns",
         "hbm_hits", "hbm_misses", "oom")


class _Meter:
    """Wraps the Ray node's calls and bring-up steps with wall-clock timers (bench only)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {"ray_start_s": 0.0, "node_create_s": 0.0, "reprofile_s": 0.0,
                                    "actor_wait_s": 0.0}
        self.calls = 0
        self.answered = 0
        self.start_cpu_s = 0.0  # this process's CPU in Ray's start and the first node's creation

    def install(self) -> list[tuple[Any, str, Any]]:
        from sn40l_emu.cluster import bringup
        from sn40l_emu.cluster.ray_node import RayNode

        # the session imports start_local_ray from bringup when it opens a node, so patching bringup is enough
        saved = [(RayNode, "_get", RayNode._get), (RayNode, "create", RayNode.__dict__["create"]),
                 (bringup, "start_local_ray", bringup.start_local_ray)]
        has_reprofile = hasattr(RayNode, "reprofile")  # absent before one node served a whole sweep
        if has_reprofile:
            saved.append((RayNode, "reprofile", RayNode.reprofile))
        answer = getattr(RayNode, "_answer", None)  # absent before the replay book
        if answer is not None:
            saved.append((RayNode, "_answer", answer))
        meter = self
        get, create, reprofile = RayNode._get, RayNode.create, getattr(RayNode, "reprofile", None)
        start = bringup.start_local_ray

        def timed_get(node: Any, refs: list[Any], timeout_s: float | None = None) -> list[Any]:
            t0 = time.perf_counter()
            try:
                return get(node, refs, timeout_s)
            finally:
                meter.t["actor_wait_s"] += time.perf_counter() - t0
                meter.calls += 1

        def counted_answer(node: Any, *args: Any) -> Any:
            meter.answered += 1
            assert answer is not None
            return answer(node, *args)

        def timed_create(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            calls, wait = meter.calls, meter.t["actor_wait_s"]
            try:
                return create(*args, **kwargs)
            finally:
                meter.t["node_create_s"] += time.perf_counter() - t0
                meter.start_cpu_s += time.process_time() - c0
                meter.calls, meter.t["actor_wait_s"] = calls, wait  # bring-up counted apart

        def timed_reprofile(node: Any, profile: Any) -> None:
            t0 = time.perf_counter()
            try:
                assert reprofile is not None
                reprofile(node, profile)
            finally:
                meter.t["reprofile_s"] += time.perf_counter() - t0

        def timed_start(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return start(*args, **kwargs)
            finally:
                meter.t["ray_start_s"] += time.perf_counter() - t0
                meter.start_cpu_s += time.process_time() - c0

        RayNode._get = timed_get  # type: ignore[method-assign]
        RayNode.create = timed_create  # type: ignore[method-assign,assignment]
        if has_reprofile:
            RayNode.reprofile = timed_reprofile  # type: ignore[method-assign]
        if answer is not None:
            RayNode._answer = counted_answer  # type: ignore[method-assign,assignment]
        bringup.start_local_ray = timed_start
        return saved

    @staticmethod
    def uninstall(saved: list[tuple[Any, str, Any]]) -> None:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _cpu_children(seen: dict[int, float]) -> None:
    """Record the CPU seconds so far of every process this one started (last value seen per pid)."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        seen[p.pid] = t.user + t.system


def sweep(backend: str, experts: tuple[int, ...],
          seeds: int | None = None) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    from sn40l_emu.experiments.coe_sweep import SweepConfig, run_sweep

    cfg = SweepConfig(backend=backend, experts=experts)
    if seeds is not None:
        cfg = dataclasses.replace(cfg, n_seeds=seeds)
    meter = _Meter()
    saved = meter.install() if backend == "ray" else []
    seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:  # the Ray processes are gone when run_sweep returns: sample them while they run
        while not stop.is_set():
            _cpu_children(seen)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        rows = run_sweep(cfg, None, progress=False)
    finally:
        _Meter.uninstall(saved)
        stop.set()
        sampler.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    parts: dict[str, Any] = {k: round(v, 3) for k, v in meter.t.items()}
    parts["actor_calls"] = meter.calls
    parts["answered"] = meter.answered
    parts["cpu_s_driver"] = round(cpu, 2)
    parts["cpu_s_driver_start"] = round(meter.start_cpu_s, 2)
    parts["cpu_s_driver_rows"] = round(cpu - meter.start_cpu_s, 2)
    parts["cpu_s_started_processes"] = round(sum(seen.values()), 2)
    return wall, rows, parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--experts", default="1,10,25,50,100,150")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per row (default: the sweep's own, 5)")
    parser.add_argument("--json", default=str(RESULTS / "coe_sweep_wall.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env

    prepare_env()
    experts = tuple(int(x) for x in args.experts.split(","))
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    ray_parts: list[dict[str, Any]] = []
    local_parts: list[dict[str, Any]] = []
    ref: list[dict[str, Any]] | None = None
    for _ in range(args.rounds):
        for backend in ("local", "ray"):
            wall, rows, parts = sweep(backend, experts, args.seeds)
            walls[backend].append(wall)
            (ray_parts if backend == "ray" else local_parts).append(parts)
            timed = [{k: r.get(k) for k in ("platform", "experts", "batch", "tokens", *TIMED)} for r in rows]
            if ref is None:
                ref = timed
            elif timed != ref:
                raise SystemExit(f"{backend}: rows differ in virtual time from the first sweep")
    local, ray_ = statistics.median(walls["local"]), statistics.median(walls["ray"])
    assert ref is not None
    # the sweep without Ray's start and the first node's actors (what a node left up by `up` saves)
    warm = statistics.median(w - p["ray_start_s"] - p["node_create_s"] for w, p in zip(walls["ray"], ray_parts,
                                                                                      strict=True))
    doc = {
        "bench": "coe_sweep_wall", "rows": len(ref), "experts": list(experts),
        "local_wall_s": round(local, 3), "ray_wall_s": round(ray_, 3), "ratio": round(ray_ / local, 3),
        "ray_wall_without_bringup_s": round(warm, 3), "ratio_without_bringup": round(warm / local, 3),
        "target_ratio": 1.5, "same_ns": True, "walls": {k: [round(x, 3) for x in v] for k, v in walls.items()},
        "ray_parts": ray_parts,
        "seeds": args.seeds or "default",
        "cpu_s": {"local": statistics.median(p["cpu_s_driver"] + p["cpu_s_started_processes"] for p in local_parts),
                  "ray": statistics.median(p["cpu_s_driver"] + p["cpu_s_started_processes"] for p in ray_parts),
                  "ray_started_processes": statistics.median(p["cpu_s_started_processes"] for p in ray_parts)},
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                 "load_avg": os.getloadavg()},
        "git": git_rev(),
    }
    print(f"coe sweep, {len(ref)} rows, medians of {args.rounds} round(s), same ns on both backends")
    print(f"  in-process {local:7.2f} s   Ray {ray_:7.2f} s   ratio {ray_ / local:5.2f}x (target <= 1.5x)")
    print(f"  Ray without Ray start and node creation {warm:7.2f} s   ratio {warm / local:5.2f}x")
    p = ray_parts[len(ray_parts) // 2]
    print(f"  Ray: start {p['ray_start_s']:.2f} s, node create {p['node_create_s']:.2f} s, "
          f"reprofile {p['reprofile_s']:.2f} s, {p['actor_calls']} actor-call rounds waiting "
          f"{p['actor_wait_s']:.2f} s, {p['answered']} steps answered without a call")
    c = doc["cpu_s"]
    print(f"  CPU: in-process {c['local']:.1f} s; Ray {c['ray']:.1f} s (driver and every process it started; "
          f"the started processes {c['ray_started_processes']:.1f} s)")
    print(f"  Ray driver CPU: {p['cpu_s_driver']:.1f} s, of which Ray start and node creation "
          f"{p['cpu_s_driver_start']:.1f} s, the rows {p['cpu_s_driver_rows']:.1f} s")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
