"""Wall time to emulate 200 decode tokens of Llama2-7B at TP8 (timing mode), Ray and in-process.

For each backend (socket actors on a private local Ray; the same socket
models in this process), on a power-cycled node with a cold program book:

* ``first_step_plain_s``: one decode step run for real as one whole program
  per socket, no reuse of any kind (66 all-reduces/all-gathers over P2P);
* ``first_step_s``: the same step as the emulator runs it, layer by layer with
  the cost of identical decoder layers reused (``CostReuse``'s layer segments);
* ``decode_200_s``: 200 decode steps (context 128 .. 327) with step-level
  cost reuse on top, program building included; ``reused_step_ms`` is the
  mean wall cost of one of the 199 reused steps; ``build_200_s`` the part of
  it spent building the 200 step programs (measured separately, cold book).

The virtual nanoseconds of the two backends must agree (checked). Target:
``decode_200_s`` under 2 s. Medians over ``--rounds``; prints a table and
writes ``bench/results/tp_decode.json``.

    .venv/bin/python bench/tp_decode_bench.py [--rounds 3] [--tokens 200] [--backends ray,local]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

from benchlib import RESULTS, git_rev, write_json

MODEL, TP, PROMPT, MODE = "llama2-7b", 8, 128, "fused_ho"


def measure(node: Any, tokens: int) -> dict[str, Any]:
    """One round on ``node`` (power-cycled first, cold program book)."""
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.experiments.tp_scaling import Runner
    from sn40l_emu.workload import ExecMode, Step, load_model, make_plan
    from sn40l_emu.workload.memory_plan import fit_in_hbm

    model = load_model(MODEL)
    plan = make_plan(model, TP)
    mode = ExecMode(MODE)
    steps = [Step.decode(1, PROMPT + i) for i in range(tokens)]
    fit = fit_in_hbm(node.profile, plan, 1, PROMPT + tokens, PROMPT)

    node.reset()
    programs = ProgramBook().group(model, plan, steps[0], mode)
    t0 = time.perf_counter()
    plain = node.run_programs(programs)
    first_plain = time.perf_counter() - t0

    runner = Runner(node, ProgramBook())
    runner.fresh()
    t0 = time.perf_counter()
    first = runner.run_steps(model, plan, steps[:1], mode, fit, fresh=False)
    first_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    builder = LayerPrograms(ProgramBook())
    for step in steps:
        builder.group(model, plan, step, mode)
    build_s = time.perf_counter() - t0

    runner = Runner(node, ProgramBook())
    runner.fresh()
    t0 = time.perf_counter()
    acc = runner.run_steps(model, plan, steps, mode, fit, fresh=False)
    decode_s = time.perf_counter() - t0
    assert max(first.end_ns.values()) == max(r.end_ns for r in plain.values())
    return {
        "first_step_plain_s": first_plain,
        "first_step_s": first_s,
        "decode_200_s": decode_s,
        "build_200_s": build_s,
        "reused_step_ms": (decode_s - first_s) / max(1, tokens - 1) * 1e3,
        "virtual_ns": max(acc.end_ns.values()),
        "step_ns": max(r.end_ns for r in plain.values()),
        "real_runs": runner.reuse.stats.real_runs,
        "reused_runs": runner.reuse.stats.reused_runs,
    }


def run_backend(backend: str, rounds: int, tokens: int) -> dict[str, Any]:
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.config import load_profile

    profile = load_profile("sn40l")
    t0 = time.perf_counter()
    with open_node(profile, backend=Backend(backend), n_sockets=8, trace=False) as node:
        startup = time.perf_counter() - t0
        results = [measure(node, tokens) for _ in range(rounds)]
    keys = [k for k in results[0] if k.endswith(("_s", "_ms"))]
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in results), 4) for k in keys}
    for k in ("virtual_ns", "step_ns", "real_runs", "reused_runs"):
        vals = {r[k] for r in results}
        assert len(vals) == 1, f"{k} differs between rounds: {vals}"
        out[k] = vals.pop()
    out["node_startup_s"] = round(startup, 2)
    out["rounds"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in results]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--backends", default="ray,local")
    parser.add_argument("--json", default=str(RESULTS / "tp_decode.json"))
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env

    prepare_env()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    res = {b: run_backend(b, args.rounds, args.tokens) for b in backends}
    if len({r["virtual_ns"] for r in res.values()}) != 1:
        raise SystemExit(f"backends disagree on virtual time: { {b: r['virtual_ns'] for b, r in res.items()} }")
    doc = {
        "bench": "tp_decode", "model": MODEL, "tp": TP, "mode": MODE, "prompt_len": PROMPT,
        "tokens": args.tokens, "target_decode_200_s": 2.0, "results": res,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "git": git_rev(),
    }
    print(f"{MODEL} TP{TP} {MODE}: {args.tokens} decode tokens (context {PROMPT}..{PROMPT + args.tokens - 1}), "
          f"medians of {args.rounds} rounds")
    print(f"{'backend':8s} {'startup s':>9s} {'1st plain s':>11s} {'1st step s':>10s} {'200 tok s':>9s} "
          f"{'build s':>8s} {'reused ms':>9s} {'virtual ms':>10s}")
    for b, r in res.items():
        print(f"{b:8s} {r['node_startup_s']:9.2f} {r['first_step_plain_s']:11.3f} {r['first_step_s']:10.3f} "
              f"{r['decode_200_s']:9.3f} {r['build_200_s']:8.3f} {r['reused_step_ms']:9.2f} "
              f"{r['virtual_ns'] / 1e6:10.3f}")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
