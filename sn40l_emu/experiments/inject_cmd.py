"""`sn40l-emu inject SCENARIO.yaml`: run a fault / bandwidth scenario and explain its effect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def run_scenario_file(path: str, backend: str | None = None) -> Any:
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.config import load_profile
    from sn40l_emu.inject.runner import ScenarioRunner
    from sn40l_emu.inject.scenario import WorkloadKind, load_scenario

    sc = load_scenario(path)
    prof = load_profile(sc.profile, list(sc.overrides))
    n = sc.workload.sockets if sc.workload.kind is WorkloadKind.ALLREDUCE else None
    with open_node(prof, backend=Backend(backend or sc.backend), n_sockets=n) as node:
        return ScenarioRunner(sc, node).run()


def _plot(report: Any, out: Path) -> Path:
    from sn40l_emu.experiments.plots_inject import inject_timeline

    return inject_timeline(report, out)


def cmd_inject(args: argparse.Namespace) -> int:
    from sn40l_emu.report import table
    from sn40l_emu.trace import write_chrome_trace

    report = run_scenario_file(args.scenario, args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    evs = [{**e.__dict__, "before_ms": None if e.latency_before_ns is None else e.latency_before_ns / 1e6,
            "after_ms": None if e.latency_after_ns is None else e.latency_after_ns / 1e6,
            "recovery_ms": e.recovery_ns / 1e6} for e in report.events]
    print(f"scenario: {report.scenario}")
    print(table(evs, [("label", "event"), ("before_ms", "latency before ms"), ("after_ms", "after ms"),
                      ("recovery_ms", "recovery ms"), ("retried", "retried"), ("failed", "failed")]))
    print(f"requests: submitted {report.submitted}, completed {report.completed}, failed {report.failed}, "
          f"retried {report.retried}")
    doc = report.to_json()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    write_chrome_trace(out / "inject_trace.json", report.trace, metadata={"scenario": report.scenario})
    png = _plot(report, out)
    print(f"wrote {args.json}, {out / 'inject_trace.json'}, {png}")
    return 0 if report.submitted == report.completed + report.failed else 1


def register(sub: Any) -> None:
    p = sub.add_parser("inject", help="run a fault / bandwidth injection scenario")
    p.add_argument("scenario", help="scenario YAML (see deploy/scenarios/)")
    p.add_argument("--backend", choices=["ray", "local"], default=None, help="override the scenario's backend")
    p.add_argument("--json", default="out/inject.json")
    p.add_argument("--out", default="out")
    p.set_defaults(func=cmd_inject)
