"""What more seeds cost the ``coe`` sweep: CPU and wall time at ``--seeds 1`` and ``--seeds N``.

Each row runs once per seed on a power-cycled node; the programs and measured step
costs are cached per platform, so a repeated seed replays only the routing and the
HBM cache. CPU time (``time.process_time``) is reported beside wall time because a
shared host's load inflates wall time; the ratio of CPU times is the cost of the
extra seeds. The rows' virtual nanoseconds of seed ``--seed`` are checked equal in
both runs (the first seed's draw does not depend on how many follow).

Prints a table and writes ``bench/results/coe_seeds_cost.json``.

    .venv/bin/python bench/coe_seeds_cost.py [--seeds 5] [--experts 1,10,25,50,100,150]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _run(cfg: Any) -> tuple[list[dict[str, Any]], float, float]:
    from sn40l_emu.experiments.coe_sweep import run_sweep

    c0, w0 = time.process_time(), time.perf_counter()  # wall-clock ok: a benchmark
    rows = run_sweep(cfg, progress=False)
    return rows, time.process_time() - c0, time.perf_counter() - w0  # wall-clock ok: a benchmark


def main() -> int:
    from dataclasses import replace

    from sn40l_emu.experiments.coe_sweep import SweepConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--experts", default="1,10,25,50,100,150")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--tokens", default="20,200")
    p.add_argument("--json", default=str(RESULTS / "coe_seeds_cost.json"))
    a = p.parse_args()
    base = SweepConfig(experts=tuple(int(x) for x in a.experts.split(",")),
                       batch_sizes=tuple(int(x) for x in a.batch.split(",")),
                       tokens=tuple(int(x) for x in a.tokens.split(",")), backend="local", n_seeds=1)
    _run(replace(base, experts=(1,), batch_sizes=(1,), tokens=(2,)))  # warm imports and caches of the process
    one, cpu1, wall1 = _run(base)
    many, cpu_n, wall_n = _run(replace(base, n_seeds=a.seeds))
    first = [(r["platform"], r["experts"], r["batch"], r["tokens"], r["samples"][0]["total_ns"] if r["samples"]
              else None) for r in many]
    assert first == [(r["platform"], r["experts"], r["batch"], r["tokens"], r["total_ns"] if not r["oom"] else None)
                     for r in one], "the first seed's nanoseconds differ"
    doc = {"rows": len(one), "seeds": a.seeds, "cpu_s_1_seed": round(cpu1, 2), "cpu_s_n_seeds": round(cpu_n, 2),
           "wall_s_1_seed": round(wall1, 2), "wall_s_n_seeds": round(wall_n, 2),
           "cpu_ratio": round(cpu_n / cpu1, 2), "experts": a.experts, "batch": a.batch, "tokens": a.tokens}
    print(f"{len(one)} rows, backend local: 1 seed {cpu1:.1f} s CPU ({wall1:.1f} s wall); "
          f"{a.seeds} seeds {cpu_n:.1f} s CPU ({wall_n:.1f} s wall); CPU ratio {cpu_n / cpu1:.2f}x")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
