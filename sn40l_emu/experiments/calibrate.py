"""`sn40l-emu calibrate`: fit named profile knobs to the published cases of one role.

Least squares on log error: the residual of case *i* is ``ln(got_i / want_i)``,
so a case measured in ms and one in GB/s weigh the same, and 10 % too fast
costs what 10 % too slow does. Knobs are fitted in the unit their YAML key
names (``launch.gpu_kernel_us`` in us), inside the bounds the profile schema
gives the field (``allow_zero``, ``max_value``, fractions <= 1), with
``scipy.optimize.least_squares`` (trust-region reflective). Every evaluation
is a normal emulator run with the knob values passed as ``--set`` overrides,
so whatever mechanism the profile drives, the fit sees it.

Cases of a platform inform only that platform's profile: the fit runs once
per platform, on that platform's cases. Each fitted knob's ``source:`` in the
written profile names the case file(s) and case ids, with the residual of
each case at the fitted value. Leave-one-out error: for each case, refit
without it (from the full fit) and predict it; that is the honest estimate of
how the calibrated profile does on a case it has not seen.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sn40l_emu.errors import ConfigError, EmuError
from sn40l_emu.experiments.cases import ROLES, Case, Target, load_cases, predict, profile_for, rel_err, summarize
from sn40l_emu.experiments.options import backend_field, check_fields, option
from sn40l_emu.schema import FieldSpec, Unit

_FITTABLE = {Unit.FRACTION, Unit.FACTOR, Unit.NS, Unit.US, Unit.GBPS, Unit.TBPS, Unit.TFLOPS}
_SIG_DIGITS = 4


@dataclass(frozen=True)
class Knob:
    """One fittable profile field: ``section.key``, its schema spec and its bounds in YAML units.

    ``quantum`` is one base unit (1 ns, 1 B/s, 1 FLOP/s) in YAML units: the profile
    stores integers, so a value is snapped to that grain before it is passed on
    (and a value below half a grain becomes 0, which the loader accepts only as 0).
    """

    path: str
    spec: FieldSpec
    lower: float
    upper: float
    quantum: float = 0.0  # 0: a float field (fraction, factor), nothing to snap

    def snap(self, v: float) -> float:
        if not self.quantum:
            return float(v)
        return round(float(v) / self.quantum) * self.quantum


def knob_spec(path: str) -> Knob:
    """The schema of ``section.key`` (raises ConfigError for an unknown or non-numeric field)."""
    from sn40l_emu import config
    from sn40l_emu.schema import convert, field_specs

    sections: dict[str, type] = config._SECTIONS  # the profile's sections, whatever the build adds
    section, _, key = path.partition(".")
    if section not in sections:
        raise ConfigError("--fit", path, "SECTION.FIELD with SECTION one of " + ", ".join(sections))
    specs = {s.yaml_key: s for _, s in field_specs(sections[section])}
    if key not in specs:
        raise ConfigError("--fit", path, f"a field of section {section}: " + ", ".join(sorted(specs)))
    spec = specs[key]
    if spec.unit not in _FITTABLE:
        raise ConfigError("--fit", path, "a continuous numeric knob (a fraction, factor, time, rate or bandwidth)")
    quantum = 0.0 if spec.unit in (Unit.FRACTION, Unit.FACTOR) else 1.0 / convert(path, 1, spec)
    lower = 0.0 if spec.allow_zero else (quantum or 1e-9)
    upper = 1.0 if spec.unit is Unit.FRACTION else (spec.max_value if spec.max_value is not None else math.inf)
    return Knob(path, spec, lower, upper, quantum)


def current_value(profile: str, knob: Knob) -> float:
    """The knob's value in ``profile`` (YAML units), after ``extends``."""
    from sn40l_emu.config import load_raw
    from sn40l_emu.schema import split_leaf

    section, _, key = knob.path.partition(".")
    raw = load_raw(profile).get(section, {})
    if not isinstance(raw, dict) or key not in raw:
        raise ConfigError("--fit", knob.path, f"a field present in profile {profile}")
    value, _, _ = split_leaf(knob.path, raw[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(knob.path, value, "a plain number in the profile to start the fit from")
    return float(value)


def yaml_number(v: float) -> str:
    """``v`` written so that YAML reads it back as that number (YAML 1.1 reads ``1e-10`` as a string)."""
    import numpy as np

    return str(np.format_float_positional(float(v), trim="0", unique=True))


def _round(x: float) -> float:
    return float(f"{x:.{_SIG_DIGITS}g}") if x else 0.0


class Evaluator:
    """Predictions of a platform's cases at knob values, memoised (the emulator is deterministic)."""

    def __init__(self, profile: str, knobs: Sequence[Knob], backend: str = "local") -> None:
        self.profile = profile
        self.knobs = tuple(knobs)
        self.backend = backend
        self._memo: dict[tuple[str, tuple[float, ...]], float] = {}
        self.runs = 0

    def overrides(self, x: Sequence[float]) -> tuple[str, ...]:
        return tuple(f"{k.path}={yaml_number(k.snap(v))}" for k, v in zip(self.knobs, x, strict=True))

    def got(self, case: Case, x: Sequence[float]) -> float:
        key = (case.id, tuple(float(v) for v in x))
        hit = self._memo.get(key)
        if hit is None:
            hit = predict(case, Target(self.profile, self.overrides(x), self.backend))
            self.runs += 1
            self._memo[key] = hit
        return hit

    def residuals(self, cases: Sequence[Case], x: Sequence[float]) -> list[float]:
        return [math.log(self.got(c, x) / c.value) for c in cases]


def fit(ev: Evaluator, cases: Sequence[Case], x0: Sequence[float], *, max_nfev: int = 20) -> list[float]:
    """Least squares on log error over ``cases``, from ``x0``, inside the knobs' bounds."""
    import numpy as np
    from scipy.optimize import least_squares

    lower = np.array([k.lower for k in ev.knobs])
    upper = np.array([k.upper for k in ev.knobs])
    start = np.clip(np.array(x0, dtype=float), lower, upper)
    # A start on a bound (a knob shipped at 0, a fraction at 1) would stop the fit at once:
    # trust-region-reflective scales the gradient by the distance to the bound. Step inside.
    room = np.minimum(1.0, (upper - lower) / 100)
    start = np.where(start <= lower, lower + room, np.where(start >= upper, upper - room, start))

    def fun(x: Any) -> Any:
        return np.array(ev.residuals(cases, list(x)))

    # Scaled by the Jacobian, so a knob starting at 0 (no natural scale) moves as far as
    # its effect asks; finite-difference steps of 1 % of max(1, |x|) and tolerances well
    # above the integer-nanosecond grain of the emulator's answers (a step below it
    # changes nothing, and the fit would wander on rounding noise).
    res = least_squares(fun, start, bounds=(lower, upper), method="trf", x_scale="jac", diff_step=1e-2,
                        xtol=1e-4, ftol=1e-6, gtol=1e-8, max_nfev=max_nfev)
    return [float(v) for v in res.x]


@dataclass
class PlatformFit:
    """The outcome for one platform: start and fitted values, residuals, leave-one-out errors."""

    platform: str
    profile: str
    knobs: tuple[Knob, ...]
    cases: tuple[Case, ...]
    x0: list[float]
    x: list[float]
    rel_errs: dict[str, float]
    loo_rel_errs: dict[str, float]
    runs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform, "profile": self.profile,
            "knobs": {k.path: {"start": a, "fitted": b} for k, a, b in zip(self.knobs, self.x0, self.x, strict=True)},
            "cases": [c.id for c in self.cases], "rel_err": self.rel_errs, "loo_rel_err": self.loo_rel_errs,
            "summary": summarize(list(self.rel_errs.values())),
            "loo_summary": summarize(list(self.loo_rel_errs.values())), "emulator_runs": self.runs,
        }


def runnable(cases: Sequence[Case], ev: Evaluator, x: Sequence[float]) -> tuple[list[Case], dict[str, str]]:
    """The cases this build can run, and why the others cannot (they take no part in the fit)."""
    ok: list[Case] = []
    skipped: dict[str, str] = {}
    for c in cases:
        try:
            ev.got(c, x)
        except (ConfigError, EmuError) as exc:
            skipped[c.id] = str(exc)
            continue
        ok.append(c)
    return ok, skipped


def calibrate_platform(platform: str, cases: Sequence[Case], knob_paths: Sequence[str], *,
                       profile_dir: str | None = None, backend: str = "local", loo: bool = True,
                       max_nfev: int = 20, x0: Sequence[float] | None = None) -> tuple[PlatformFit, dict[str, str]]:
    """Fit ``knob_paths`` of ``platform``'s profile to its ``cases``; leave-one-out unless ``loo=False``."""
    profile = profile_for(platform, profile_dir)
    knobs = [knob_spec(p) for p in knob_paths]
    start = list(x0) if x0 is not None else [current_value(profile, k) for k in knobs]
    ev = Evaluator(profile, knobs, backend)
    mine, skipped = runnable([c for c in cases if c.platform == platform], ev, start)
    if not mine:
        raise ConfigError("--fit", ",".join(knob_paths), f"cases of platform {platform} that this build can run")
    x = [_round(k.snap(v)) for k, v in zip(knobs, fit(ev, mine, start, max_nfev=max_nfev), strict=True)]
    errs = {c.id: rel_err(ev.got(c, x), c.value) for c in mine}
    loo_errs: dict[str, float] = {}
    if loo and len(mine) > 1:
        for c in mine:
            rest = [o for o in mine if o.id != c.id]
            xi = [_round(k.snap(v)) for k, v in zip(knobs, fit(ev, rest, x, max_nfev=max_nfev), strict=True)]
            loo_errs[c.id] = rel_err(ev.got(c, xi), c.value)
    return PlatformFit(platform, profile, tuple(knobs), tuple(mine), start, x, errs, loo_errs, ev.runs), skipped


def knob_source(pf: PlatformFit) -> str:
    """The ``source:`` text of a fitted knob: files, case ids, residuals, the other knobs fitted with it."""
    files = sorted({c.file for c in pf.cases})
    resid = ", ".join(f"{cid} {100 * e:+.1f}%" for cid, e in pf.rel_errs.items())
    together = ", ".join(k.path for k in pf.knobs)
    return (f"calibrated (sn40l-emu calibrate, least squares on log error, fitted together: {together}) "
            f"on {', '.join(files)} cases {', '.join(c.id for c in pf.cases)}; residuals: {resid}")


def profile_yaml(pf: PlatformFit) -> str:
    """The fitted profile: each fitted knob set with its calibration source.

    It ``extends`` a shipped profile by name; a profile fitted from a YAML file is
    written out whole instead (the output may replace that very file).
    """
    from sn40l_emu.config import load_profile, load_raw, shipped_profiles

    base = load_profile(pf.profile)
    desc = f"{base.description} (calibrated: {', '.join(k.path for k in pf.knobs)})"
    data: dict[str, Any]
    if pf.profile in shipped_profiles():
        data = {"extends": pf.profile, "name": base.name, "description": desc}
    else:
        data = {**load_raw(pf.profile), "name": base.name, "description": desc}
    for k, v in zip(pf.knobs, pf.x, strict=True):
        section, _, key = k.path.partition(".")
        data[section] = dict(data.get(section, {}))
        data[section][key] = {"value": v, "knob": True, "source": knob_source(pf)}
    head = f"# Written by `sn40l-emu calibrate`; load with --profile {pf.platform}.yaml or validate --profile-dir.\n"
    return head + yaml.safe_dump(data, sort_keys=False, width=1000, allow_unicode=True)


def report_text(fits: Sequence[PlatformFit], skipped: dict[str, str]) -> str:
    lines = []
    for pf in fits:
        lines.append(f"platform {pf.platform} ({len(pf.cases)} cases, {pf.runs} emulator runs):")
        for k, a, b in zip(pf.knobs, pf.x0, pf.x, strict=True):
            lines.append(f"  {k.path:32s} {a:>10.4g} -> {b:<10.4g} [{k.lower:g}, {k.upper:g}]")
        for c in pf.cases:
            loo = pf.loo_rel_errs.get(c.id)
            loo_txt = f"   leave-one-out {100 * loo:+.1f}%" if loo is not None else ""
            lines.append(f"  {c.id:44s} fitted {100 * pf.rel_errs[c.id]:+6.1f}%{loo_txt}")
    for cid, why in skipped.items():
        lines.append(f"skipped {cid}: {why}")
    fitted = [e for pf in fits for e in pf.rel_errs.values()]
    loo_all = [e for pf in fits for e in pf.loo_rel_errs.values()]
    for label, errs in (("fitted", fitted), ("leave-one-out", loo_all)):
        s = summarize(errs)
        if s["count"]:
            lines.append(f"{label:14s} {s['count']} cases: median |err| {100 * s['median_abs_rel_err']:.1f}%, "
                         f"worst {100 * s['worst_abs_rel_err']:.1f}%, within 10%: {s['within_10pct']}, "
                         f"within 25%: {s['within_25pct']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class CalibrateConfig:
    """What to fit, to which cases, from which profiles (the run directory holds the fitted profiles)."""

    fit: str = option("", "profile fields to fit, comma-separated, e.g. runtime.step_overhead_us",
                      metavar="KNOB[,KNOB...]", shown="none: required")
    role: str = option("calibration", "fit to the cases of this role", choices=ROLES)
    cases: str = option("validation/", "a case YAML file or a directory of them", metavar="PATH")
    platform: str = option("", "fit only this platform's profile", metavar="PLATFORM",
                           shown="every platform with cases of the role")
    profile_dir: str = option("", "start from DIR/<platform>.yaml where present", metavar="DIR",
                              shown="the shipped profiles")
    backend: str = backend_field("local")
    max_nfev: int = option(20, "emulator evaluations per fit, at most", lo=1, hi=10_000)
    loo: bool = option(True, "the leave-one-out refits (each case refitted without it, then predicted)")
    profile_out: str = option("", "also write the fitted profile here: PROFILE.yaml (one platform) or a "
                                  "directory (one YAML per platform)", metavar="PATH",
                              shown="none; the run directory holds <platform>.yaml")

    def __post_init__(self) -> None:
        check_fields(self)

    def knobs(self) -> list[str]:
        return [k.strip() for k in self.fit.split(",") if k.strip()]


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Every input is checked before the run directory is made; each profile is written as soon as it is fitted."""
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable

    cfg = from_args(CalibrateConfig, args)
    knob_paths = cfg.knobs()
    if not knob_paths:
        raise ConfigError("--fit", cfg.fit, "one or more SECTION.FIELD knobs, comma-separated")
    for k in knob_paths:
        knob_spec(k)
    if args.out and Path(args.out).suffix in (".yaml", ".yml"):
        raise ConfigError("--out", args.out, "a run directory (it holds <platform>.yaml); "
                          "--profile-out PROFILE.yaml writes the fitted profile elsewhere")
    cases = [c for c in load_cases(cfg.cases) if c.role == cfg.role]
    platforms = sorted({c.platform for c in cases})
    if cfg.platform:
        if cfg.platform not in platforms:
            raise ConfigError("--platform", cfg.platform, "a platform with cases of role " + cfg.role
                              + (": " + ", ".join(platforms) if platforms else ""))
        platforms = [cfg.platform]
    if not platforms:
        raise ConfigError("--role", cfg.role, "a role with at least one case in " + str(cfg.cases))
    extra = Path(cfg.profile_out) if cfg.profile_out else None
    one_file = extra is not None and extra.suffix in (".yaml", ".yml")
    if one_file and len(platforms) > 1:
        raise ConfigError("--profile-out", cfg.profile_out, f"a directory (cases of {len(platforms)} platforms: "
                          f"{', '.join(platforms)}), or pass --platform")
    if extra is not None and one_file:
        rundir.check_file_path(extra, "--profile-out")
    elif extra is not None:
        rundir.check_out_dir(extra, True, "--profile-out")
    run = rundir.prepare("calibrate", {"calibrate": to_jsonable(cfg)}, out=args.out, overwrite=args.overwrite,
                         json_path=args.json, argv=getattr(args, "argv", None))
    fits: list[PlatformFit] = []
    skipped: dict[str, str] = {}
    written = []
    for platform in platforms:
        pf, sk = calibrate_platform(platform, cases, knob_paths, profile_dir=cfg.profile_dir or None,
                                    backend=cfg.backend, loo=cfg.loo, max_nfev=cfg.max_nfev)
        fits.append(pf)
        skipped.update(sk)
        text_yaml = profile_yaml(pf)
        run.file(f"{pf.platform}.yaml").write_text(text_yaml)
        written.append(str(run.path / f"{pf.platform}.yaml"))
        if extra is not None:
            path = extra if one_file else extra / f"{pf.platform}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text_yaml)
            written.append(str(path))
    text = report_text(fits, skipped)
    print(text)
    doc = {"fits": [pf.to_json() for pf in fits], "skipped": skipped, "role": cfg.role, "cases": str(cfg.cases),
           "config": to_jsonable(cfg)}
    run.write_json("results.json", doc)
    run.write_rows("results", [{"platform": pf.platform, "case": c.id, "fitted_rel_err": pf.rel_errs[c.id],
                                "loo_rel_err": pf.loo_rel_errs.get(c.id)} for pf in fits for c in pf.cases])
    if args.json:
        rundir.write_copy(args.json, doc)
        written.append(str(args.json))
    run.finish(f"```\n{text}\n```", rows=sum(len(pf.cases) for pf in fits))
    print(f"\nwrote {run.path}/ (" + ", ".join(f"{pf.platform}.yaml" for pf in fits)
          + ", results.json, results.csv, summary.md)"
          + "".join(f", {w}" for w in written if not w.startswith(str(run.path))))
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("calibrate", help="fit profile knobs to published cases (least squares on log error)",
                       description=(__doc__ or "").split("\n\n", 1)[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, CalibrateConfig)
    output_args(p, "also write the fit, residuals and leave-one-out errors here")
    p.set_defaults(func=cmd_calibrate)
