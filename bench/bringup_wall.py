"""Wall time to bring a node up on Ray: start Ray, create 8 socket actors, wire them, first program.

Phases (one private local Ray per round, as ``sn40l-emu coe --backend ray`` starts it):

* ``ray_start_s``: ``start_local_ray`` (``ray.init`` on 127.0.0.1);
* ``create_s``: ``RayNode.create`` with 8 socket actors: placement group,
  actor processes started, same-host endpoints opened, peers connected;
* ``first_program_s``: a 4 KiB all-reduce over the 8 sockets (the actors and links are warm after it);
* ``reprofile_s``: the same actors power-cycled into another platform's sockets
  (what a sweep over platforms pays instead of a new node);
* ``close_s``: killing the actors and stopping Ray.

Target: node bring-up (``ray_start_s + create_s``) in a few seconds. Medians
over ``--rounds``; prints a table and writes ``bench/results/bringup_wall.json``.

    .venv/bin/python bench/bringup_wall.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=False)
        return out.stdout.strip()
    except OSError:
        return ""


def one_round() -> dict[str, float]:
    from sn40l_emu.cluster.bringup import start_local_ray
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    sn40l, dgx = load_profile("sn40l"), load_profile("dgx-h100")
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ray = start_local_ray(num_cpus=2, sockets=16)
    out["ray_start_s"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        node = RayNode.create(sn40l, trace=False)
        out["create_s"] = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            op = CollectiveOp("hello", CollectiveKind.ALL_REDUCE, tuple(range(8)), (1024,), "float32")
            node.run_programs({s: Program.of("hello", [op]) for s in range(8)})
            out["first_program_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            node.reprofile(dgx)
            out["reprofile_s"] = time.perf_counter() - t0
        finally:
            t0 = time.perf_counter()
            node.close()
    finally:
        ray.shutdown()
        out["close_s"] = time.perf_counter() - t0
    out["bringup_s"] = out["ray_start_s"] + out["create_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=str(RESULTS / "bringup_wall.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env

    prepare_env()
    rounds = [one_round() for _ in range(args.rounds)]
    med: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]}
    doc = {"bench": "bringup_wall", "sockets": 8, "median": med,
           "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
           "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                    "load_avg": os.getloadavg()},
           "git": _git_rev()}
    print(f"node bring-up on Ray, 8 socket actors, medians of {args.rounds} round(s)")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.3f}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
