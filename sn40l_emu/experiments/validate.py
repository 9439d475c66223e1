"""`sn40l-emu validate`: run every published case and say how far the emulator is from it.

Per case it prints got, want and the relative error ``got / want - 1``, and
under the table the profile settings a case runs with (its ``set:``, each
marked ``(assumed)`` where the source does not state it); then
one summary per role (count, median and worst |relative error|, how many within
10 % and 25 %). Calibration cases are summarised apart: a case knobs were
fitted to says how well the fit went, never how well the emulator predicts, so
it is never counted in the validation summary.

A case whose configuration this build cannot run (for example an all-reduce
algorithm the collective layer does not have) is listed as skipped, with the
reason, and left out of both summaries.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError, EmuError
from sn40l_emu.experiments.cases import ROLES, Case, Target, load_cases, predict, profile_for, rel_err, summarize
from sn40l_emu.experiments.options import backend_field, check_fields, option


def run_case(case: Case, *, backend: str = "local", profile_dir: str | None = None,
             overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """One JSON row: the case, what the emulator got, and the relative error (or why it was skipped)."""
    row: dict[str, Any] = {"id": case.id, "source": case.source, "role": case.role, "platform": case.platform,
                           "metric": case.metric, "phase": case.phase, "unit": case.unit, "want": case.value,
                           "got": None, "rel_err": None, "file": case.file, "set": list(case.settings),
                           "assumed": list(case.assumed)}
    target = Target(profile_for(case.platform, profile_dir), overrides, backend)
    try:
        got = predict(case, target)
    except (ConfigError, EmuError) as exc:
        row["skipped"] = str(exc)
        return row
    row["got"] = got
    row["rel_err"] = rel_err(got, case.value)
    return row


def summaries(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary per role, over the rows that ran; ``skipped`` counts the others."""
    out: dict[str, Any] = {}
    for role in ROLES:
        mine = [r for r in rows if r["role"] == role]
        s = summarize([r["rel_err"] for r in mine if r["rel_err"] is not None])
        s["skipped"] = sum(r["rel_err"] is None for r in mine)
        out[role] = s
    return out


def fitted_case_ids(cases: list[Case], profile_dir: str | None = None) -> dict[str, str]:
    """Case id -> profile, for every case that a knob of the profile its platform runs on was calibrated on.

    A ``source:`` written by ``calibrate`` names the case ids it was fitted to; such a
    case is reported as calibration whatever role its file gives it.
    """
    import re

    from sn40l_emu.config import load_profile

    out: dict[str, str] = {}
    for platform in sorted({c.platform for c in cases}):
        profile = profile_for(platform, profile_dir)
        try:
            sources = load_profile(profile).sources
        except ConfigError:
            continue
        words = {w for _, text in sources if "calibrated" in text for w in re.split(r"[\s,;:()]+", text)}
        out.update({c.id: profile for c in cases if c.platform == platform and c.id in words})
    return out


def run_validate(cases: list[Case], *, backend: str = "local", profile_dir: str | None = None) -> dict[str, Any]:
    """``{"cases": [...], "summary": {role: {...}}}`` for ``cases``."""
    fitted = fitted_case_ids(cases, profile_dir)
    rows = []
    for c in cases:
        row = run_case(c, backend=backend, profile_dir=profile_dir)
        if c.id in fitted and row["role"] != "calibration":
            row["role"] = "calibration"
            row["fitted_in"] = fitted[c.id]  # a knob of this profile was fitted to it: not a validation
        rows.append(row)
    return {"cases": rows, "summary": summaries(rows)}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.4g}"


def table_text(result: dict[str, Any]) -> str:
    from sn40l_emu.report import table

    cells = []
    for r in result["cases"]:
        err = "skipped" if r["rel_err"] is None else f"{100 * r['rel_err']:+.1f}%"
        cells.append({"id": r["id"], "role": r["role"], "platform": r["platform"], "metric": r["metric"],
                      "got": _fmt(r["got"]), "want": _fmt(r["want"]), "unit": r["unit"], "err": err})
    cols = (("id", "case"), ("role", "role"), ("platform", "platform"), ("metric", "metric"), ("got", "got"),
            ("want", "want"), ("unit", "unit"), ("err", "rel err"))
    lines = [table(cells, cols), ""]
    for r in result["cases"]:
        if r.get("set"):  # the serving settings the case runs with; assumed ones are not in its source
            assumed = set(r.get("assumed", ()))
            shown = [s + (" (assumed)" if s.partition("=")[0].strip() in assumed else "") for s in r["set"]]
            lines.append(f"{r['id']} runs {r.get('phase', '')} with " + ", ".join(shown))
    for r in result["cases"]:
        if r["rel_err"] is None:
            lines.append(f"skipped {r['id']}: {r['skipped']}")
    for role, s in result["summary"].items():
        if s["count"] == 0:
            lines.append(f"{role:12s} no cases ran ({s['skipped']} skipped)")
            continue
        lines.append(f"{role:12s} {s['count']} cases: median |err| {100 * s['median_abs_rel_err']:.1f}%, "
                     f"worst {100 * s['worst_abs_rel_err']:.1f}%, within 10%: {s['within_10pct']}/{s['count']}, "
                     f"within 25%: {s['within_25pct']}/{s['count']}"
                     + (f" ({s['skipped']} skipped)" if s["skipped"] else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class ValidateConfig:
    """Which cases to run and on which profiles (output paths are the run directory's: ``--out``, ``--json``)."""

    cases: str = option("validation/", "a case YAML file or a directory of them", metavar="PATH")
    role: str = option("all", "run only the cases of this role (all: every role)", choices=("all", *ROLES))
    backend: str = backend_field("local")
    profile_dir: str = option("", "use DIR/<platform>.yaml (e.g. from `calibrate`) instead of the shipped "
                                  "profile where present", metavar="DIR", shown="the shipped profiles")

    def __post_init__(self) -> None:
        check_fields(self)


def cmd_validate(args: argparse.Namespace) -> int:
    """Cases are read and checked before the run directory is made (a bad file creates nothing)."""
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.experiments.plots_parity import plot_parity

    cfg = from_args(ValidateConfig, args)
    cases = load_cases(cfg.cases)
    if cfg.role != "all":
        cases = [c for c in cases if c.role == cfg.role]
    run = rundir.prepare("validate", {"validate": to_jsonable(cfg)}, out=args.out, overwrite=args.overwrite,
                         json_path=args.json, argv=getattr(args, "argv", None))
    t0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
    result = run_validate(cases, backend=cfg.backend, profile_dir=cfg.profile_dir or None)
    wall_s = time.perf_counter() - t0  # wall-clock ok: measures the emulator itself
    text = table_text(result)
    print(text)
    doc = {**result, "config": {**to_jsonable(cfg), "wall_s": round(wall_s, 3)}}
    run.write_json("results.json", doc)
    run.write_rows("results", result["cases"])
    png = plot_parity(result["cases"], run.path)
    run.file(Path(png).name)
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish(f"```\n{text}\n```\n\n![parity plot]({Path(png).name})", rows=len(result["cases"]))
    print(f"\nwrote {run.path}/ (results.json, results.csv, {Path(png).name}, summary.md)"
          f"{' and ' + str(args.json) if args.json else ''} ({wall_s:.1f} s)")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("validate", help="run the published-measurement cases and report the emulator's error",
                       description=(__doc__ or "").split("\n\n", 1)[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, ValidateConfig)
    output_args(p, "also write {cases, summary, config} here")
    p.set_defaults(func=cmd_validate)
