"""Wall time of one TP8 llama2-7b decode step over the 8 socket actors: fast path vs Ray path.

One decode step (batch 1, context 128, fused + hardware-orchestrated) is one
program per socket with 65 all-reduces (3640 small P2P frames). Measured in
one run, interleaved round by round: the same-host fast path (Unix sockets +
shared memory, the default), the Ray actor-task path for every frame
(``RayNode.connect(fast_p2p=False)``, what the emulator did before), and the
in-process node for reference. Every run's nanoseconds must equal the
in-process ones (checked). Prints min / median and writes
``bench/results/p2p_decode_step.json``.

    .venv/bin/python bench/p2p_decode_step.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--json", default=str(RESULTS / "p2p_decode_step.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env, start_local_ray

    prepare_env()
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

    profile = load_profile("sn40l")
    model = load_model("llama2-7b")
    programs = ProgramBook().group(model, make_plan(model, 8), Step.decode(1, 128), ExecMode.FUSED_HO)
    local = LocalNode(profile, trace=False)
    handle = start_local_ray(num_cpus=2)
    node = RayNode.create(profile, trace=False)
    walls: dict[str, list[float]] = {"fast path": [], "Ray path": [], "in-process": []}
    try:
        reference = {s: r.duration_ns for s, r in local.run_programs(programs).items()}
        for rnd in range(1 + args.rounds):
            for label in walls:
                target = local if label == "in-process" else node
                if label != "in-process":
                    node.connect(fast_p2p=label == "fast path")
                began = time.perf_counter()
                results = target.run_programs(programs)
                wall = time.perf_counter() - began
                assert {s: r.duration_ns for s, r in results.items()} == reference, label
                if rnd > 0:
                    walls[label].append(wall)
        node.connect(fast_p2p=True)
    finally:
        node.close()
        handle.shutdown()
        local.close()
    print(f"# TP8 llama2-7b decode step (65 all-reduces), 8 socket actors, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f}; {args.rounds} rounds; virtual ns equal on every path")
    print(f"{'path':12s} {'min (s)':>8s} {'median (s)':>11s}")
    for label, vals in walls.items():
        print(f"{label:12s} {min(vals):8.3f} {statistics.median(vals):11.3f}")
    out = {"step": "decode batch 1 context 128, FUSED_HO, llama2-7b TP8", "rounds": args.rounds,
           "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
           "wall_s": {k: {"min": min(v), "median": statistics.median(v), "samples": v} for k, v in walls.items()},
           "step_ns": reference[0]}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
