"""`sn40l-emu inject SCENARIO.yaml`: run a fault / bandwidth scenario and explain its effect."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.experiments.options import BACKENDS, check_fields, option, overrides_field


@dataclass(frozen=True)
class InjectConfig:
    """A scenario file, and what the command line changes of it (backend, profile, profile fields)."""

    scenario: str = option("", "scenario YAML (see deploy/scenarios/)", positional=True, metavar="SCENARIO")
    backend: str | None = option(None, "override the scenario's backend (default: the scenario's)",
                                 choices=BACKENDS)
    profile: str | None = option(None, "override the scenario's profile: shipped name or YAML path "
                                       "(default: the scenario's)", metavar="NAME")
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


def run_scenario_file(path: str, backend: str | None = None, *, profile: str | None = None,
                      overrides: tuple[str, ...] = ()) -> Any:
    """Load and run a scenario; returns its report (see :func:`run_scenario`)."""
    from sn40l_emu.inject.scenario import load_scenario

    return run_scenario(load_scenario(path), backend, profile=profile, overrides=overrides)


def run_scenario(sc: Any, backend: str | None = None, *, profile: str | None = None,
                 overrides: tuple[str, ...] = ()) -> Any:
    """Run a parsed scenario on a node it opens (see :func:`sn40l_emu.inject.plan.run_on_new_node`).

    An error the run does not recover from is re-raised with the report attached (``exc.report``).
    """
    from sn40l_emu.config import load_profile
    from sn40l_emu.inject.plan import run_on_new_node

    prof = load_profile(profile or sc.profile, [*sc.overrides, *overrides])
    return run_on_new_node(sc, prof, backend or sc.backend)


def _plot(report: Any, out: Path) -> Path:
    from sn40l_emu.experiments.plots_inject import inject_timeline

    return inject_timeline(report, out)


def _failure_reasons(report: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in report.outcomes:
        if o.status == "failed":
            out[o.reason] = out.get(o.reason, 0) + 1
    return out


def _print_windows(report: Any) -> None:
    """Serving: latency p50/p99 of the requests before, during and after each event."""
    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v / 1e6:.3f}"

    s = report.serving
    print(f"serving: {s['completed']} completed, {s['failed']} failed, p50 {ms(s['p50_ns'])} ms, "
          f"p99 {ms(s['p99_ns'])} ms")
    for e in report.events:
        if not e.windows:
            continue
        parts = [f"{k} n={w['n']} p50 {ms(w['p50_ns'])} p99 {ms(w['p99_ns'])}" for k, w in e.windows.items()]
        print(f"  {e.label}: " + "; ".join(parts) + " (ms)")


def cmd_inject(args: argparse.Namespace) -> int:
    from sn40l_emu.errors import EmuError
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.inject.scenario import load_scenario
    from sn40l_emu.report import table
    from sn40l_emu.trace import write_chrome_trace

    cfg = from_args(InjectConfig, args)
    sc = load_scenario(cfg.scenario)  # bad scenarios fail here, before any output is created
    resolved = {"inject": to_jsonable(cfg), "scenario_name": sc.name, "scenario_file": str(Path(cfg.scenario))}
    # every output path is checked here, before the run
    run = rundir.prepare("inject", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    out = run.path
    try:
        report = run_scenario(sc, cfg.backend, profile=cfg.profile, overrides=cfg.overrides)
    except EmuError as exc:  # not recovered: the requests are still accounted for in the JSON
        rep = getattr(exc, "report", None)
        if rep is not None:
            doc = rep.to_json()
            run.write_json("results.json", doc)
            if args.json:
                rundir.write_copy(args.json, doc)
            print(f"wrote {out / 'results.json'} (the run stopped: {exc})")
        raise
    evs = [{**e.__dict__, "before_ms": None if e.latency_before_ns is None else e.latency_before_ns / 1e6,
            "after_ms": None if e.latency_after_ns is None else e.latency_after_ns / 1e6,
            "recovery_ms": e.recovery_ns / 1e6} for e in report.events]
    print(f"scenario: {report.scenario}")
    text = table(evs, [("label", "event"), ("before_ms", "latency before ms"), ("after_ms", "after ms"),
                       ("recovery_ms", "recovery ms"), ("retried", "retried"), ("failed", "failed")])
    counts = (f"requests: submitted {report.submitted}, completed {report.completed}, failed {report.failed}, "
              f"retried {report.retried}")
    print(text)
    print(counts)
    reasons = _failure_reasons(report)
    for reason, n in reasons.items():
        print(f"  failed x{n}: {reason}")
    if report.serving:
        _print_windows(report)
    doc = report.to_json()
    run.write_json("results.json", doc)
    rows = [r for r in doc.get("rows", []) if isinstance(r, dict)] if isinstance(doc, dict) else []
    if rows:
        run.write_rows("results", rows)
    if evs:
        run.write_rows("events", evs)
    if args.json:
        rundir.write_copy(args.json, doc)
    write_chrome_trace(run.file("inject_trace.json"), report.trace, metadata={"scenario": report.scenario})
    png = _plot(report, out)
    run.file(png.name)
    failed_text = "".join(f"\n- failed x{n}: {reason}" for reason, n in reasons.items())
    run.finish(f"scenario: {report.scenario}\n\n```\n{text}\n```\n\n{counts}{failed_text}", rows=len(rows))
    print(f"wrote {out}/ (results.json, inject_trace.json, {png.name})"
          f"{' and ' + str(args.json) if args.json else ''}")
    return 0 if report.submitted == report.completed + report.failed else 1


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("inject", help="run a fault / bandwidth injection scenario",
                       description="Run a fault or bandwidth scenario (kill a socket, degrade a link, throttle "
                                   "DDR...) against a workload and report each event's effect and recovery.")
    add_options(p, InjectConfig)
    output_args(p, "also write the report JSON here")
    p.set_defaults(func=cmd_inject)
