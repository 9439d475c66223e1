"""`sn40l-emu inject SCENARIO.yaml`: run a fault / bandwidth scenario and explain its effect."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def run_scenario_file(path: str, backend: str | None = None) -> Any:
    """Load and run a scenario; returns its report (see :func:`run_scenario`)."""
    from sn40l_emu.inject.scenario import load_scenario

    return run_scenario(load_scenario(path), backend)


def run_scenario(sc: Any, backend: str | None = None) -> Any:
    """Run a parsed scenario on a node it opens (see :func:`sn40l_emu.inject.plan.run_on_new_node`)."""
    from sn40l_emu.config import load_profile
    from sn40l_emu.inject.plan import run_on_new_node

    return run_on_new_node(sc, load_profile(sc.profile, list(sc.overrides)), backend or sc.backend)


def check_writable(path: str, option: str) -> Path:
    """``path`` can be created and written (checked before a run, not after it)."""
    from sn40l_emu.errors import ConfigError

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise ConfigError(option, path[:80], "a path whose folder can be created") from None
    if p.is_dir() or not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(option, path[:80], "a writable file path")
    return p


def check_writable_dir(path: str, option: str) -> Path:
    from sn40l_emu.errors import ConfigError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise ConfigError(option, path[:80], "a folder that can be created") from None
    if not os.access(p, os.W_OK):
        raise ConfigError(option, path[:80], "a writable folder")
    return p


def _plot(report: Any, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.get("status", "completed") == "completed" and not r.get("failed_requests")]
    key = "total_ns" if rows and "total_ns" in rows[0] else "time_ns"
    xs = [r.get("batch", r.get("repeat", r.get("generation"))) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(xs, [r[key] / 1e6 for r in rows], "o-")
    for e in report.events:
        if e.requests_done_at_apply is not None:
            per = max(1, len(rows[0].get("requests", [0]))) if rows else 1
            x = e.requests_done_at_apply / per - 0.5
            ax.axvline(x, color="red", ls="--", alpha=0.6)
            ax.text(x, ax.get_ylim()[1] * 0.95, e.kind, rotation=90, va="top", fontsize=8, color="red")
    ax.set_xlabel("batch" if key == "total_ns" else "request")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{report.scenario}")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(bottom=0.14, top=0.9, left=0.1, right=0.97)
    p = out / "inject_timeline.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


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
    from sn40l_emu.inject.scenario import load_scenario
    from sn40l_emu.report import table
    from sn40l_emu.trace import write_chrome_trace

    sc = load_scenario(args.scenario)
    json_path = check_writable(args.json, "--json")
    out = check_writable_dir(args.out, "--out")
    try:
        report = run_scenario(sc, args.backend)
    except EmuError as exc:  # not recovered: the requests are still accounted for in the JSON
        if hasattr(exc, "report"):
            json_path.write_text(json.dumps(exc.report.to_json(), indent=2, default=str))
            print(f"wrote {json_path} (the run stopped: {exc})")
        raise
    evs = [{**e.__dict__, "before_ms": None if e.latency_before_ns is None else e.latency_before_ns / 1e6,
            "after_ms": None if e.latency_after_ns is None else e.latency_after_ns / 1e6,
            "recovery_ms": e.recovery_ns / 1e6} for e in report.events]
    print(f"scenario: {report.scenario}")
    print(table(evs, [("label", "event"), ("before_ms", "latency before ms"), ("after_ms", "after ms"),
                      ("recovery_ms", "recovery ms"), ("retried", "retried"), ("failed", "failed")]))
    print(f"requests: submitted {report.submitted}, completed {report.completed}, failed {report.failed}, "
          f"retried {report.retried}")
    for reason, n in _failure_reasons(report).items():
        print(f"  failed x{n}: {reason}")
    if report.serving:
        _print_windows(report)
    json_path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    write_chrome_trace(out / "inject_trace.json", report.trace, metadata={"scenario": report.scenario})
    png = _plot(report, out)
    print(f"wrote {json_path}, {out / 'inject_trace.json'}, {png}")
    return 0 if report.submitted == report.completed + report.failed else 1


def register(sub: Any) -> None:
    p = sub.add_parser("inject", help="run a fault / bandwidth injection scenario")
    p.add_argument("scenario", help="scenario YAML (see deploy/scenarios/)")
    p.add_argument("--backend", choices=["ray", "local"], default=None, help="override the scenario's backend")
    p.add_argument("--json", default="out/inject.json")
    p.add_argument("--out", default="out")
    p.set_defaults(func=cmd_inject)
