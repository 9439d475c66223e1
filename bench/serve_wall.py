"""Serving wall time per request, in-process: ``coe-serve`` with 10,000 requests (target <= 0.2 ms).

Runs ``run_serving`` (sn40l, llama2-7b, 100 experts, batch 8, Poisson 2 req/s,
LRU) on the in-process backend: the node's costs are measured on its sockets
once per shape, then every request is served from them. Reported: the whole
call (measurement included) and its two parts, in wall and CPU time, per
request; and, in the same run, the coordinator-driven path (``exact``: every
request's prefill and decode steps through the sockets) on fewer requests, as
the per-request reference. Both give the same nanoseconds (tests/test_fleet_serving.py).

    .venv/bin/python bench/serve_wall.py [--requests 10000] [--exact-requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--exact-requests", type=int, default=300)
    parser.add_argument("--json", default=str(RESULTS / "serve_wall.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.coe.fleet_costs import CostServer, measure_node_costs
    from sn40l_emu.coe.serving import simulate_serving
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.coe_serve import run_serving, serving_requests
    from sn40l_emu.workload import load_model

    kw = {"backend": "local", "progress": False}
    run_serving("sn40l", "llama2-7b", 100, 8, 2.0, 20, ["lru"], **kw)  # type: ignore[arg-type]  # warm imports

    def timed(fn):  # type: ignore[no-untyped-def]
        w, c = time.perf_counter(), time.process_time()  # wall-clock ok: the benchmark
        r = fn()
        return r, time.perf_counter() - w, time.process_time() - c  # wall-clock ok

    rows, w_all, c_all = timed(lambda: run_serving("sn40l", "llama2-7b", 100, 8, 2.0, args.requests,
                                                   ["lru"], **kw))  # type: ignore[arg-type]
    reqs = serving_requests(100, args.requests, 2.0)
    node = LocalNode(load_profile("sn40l"), trace=False)
    costs, w_m, c_m = timed(lambda: measure_node_costs(node, load_model("llama2-7b"), 100, 8,
                                                       sorted({(r.prompt_len, r.output_tokens) for r in reqs})))
    node.close()
    _, w_s, c_s = timed(lambda: simulate_serving(reqs, 8, CostServer(costs).serve))
    _, w_x, c_x = timed(lambda: run_serving("sn40l", "llama2-7b", 100, 8, 2.0, args.exact_requests, ["lru"],
                                            exact=True, **kw))  # type: ignore[arg-type]
    n, nx = args.requests, args.exact_requests
    out = {
        "requests": n, "host": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                                "python": platform.python_version()},
        "p99_ns": rows[0]["p99_ns"], "completed": rows[0]["completed"],
        "whole_run": {"wall_s": w_all, "cpu_s": c_all, "ms_per_request_wall": w_all / n * 1e3,
                      "ms_per_request_cpu": c_all / n * 1e3},
        "measure_costs_once": {"wall_s": w_m, "cpu_s": c_m},
        "serve_from_costs": {"wall_s": w_s, "cpu_s": c_s, "ms_per_request_wall": w_s / n * 1e3,
                             "ms_per_request_cpu": c_s / n * 1e3},
        "exact_coordinator_path": {"requests": nx, "wall_s": w_x, "cpu_s": c_x,
                                   "ms_per_request_wall": w_x / nx * 1e3, "ms_per_request_cpu": c_x / nx * 1e3},
        "target_ms_per_request": 0.2,
    }
    print(f"# coe-serve in-process, {n} requests; {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"whole run (measure + serve): {w_all:.2f} s wall ({w_all / n * 1e3:.3f} ms/req), "
          f"{c_all:.2f} s CPU ({c_all / n * 1e3:.3f} ms/req)")
    print(f"  measure costs once:        {w_m:.2f} s wall, {c_m:.2f} s CPU")
    print(f"  serve from the costs:      {w_s:.2f} s wall ({w_s / n * 1e3:.4f} ms/req), "
          f"{c_s:.2f} s CPU ({c_s / n * 1e3:.4f} ms/req)")
    print(f"exact coordinator path, {nx} requests: {w_x / nx * 1e3:.2f} ms/req wall, "
          f"{c_x / nx * 1e3:.2f} ms/req CPU")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
