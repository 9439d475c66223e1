"""`sn40l-emu run FILE.yaml`: an experiment file, a grid of one command's options.

The file names the command, fixed options, a grid over any option or profile
knob, and seeds::

    command: coe                    # coe, capacity, coe-serve, tp-scaling, allreduce-bench, inject
    description: Table V of the SN40L paper
    options:                        # fixed for every point (option names as on the command line)
      model: llama2-7b
      backend: local
      set: ["p2p.link_bw_gbps=25"]  # profile overrides for every point
    grid:
      product:                      # every combination (or `zip`: the lists side by side)
        profile: [sn40l, dgx-a100]
        experts: [10, 50, 150]
        set.socket.hbm_gib: [32, 64]   # a profile knob: set.<field path>
    seeds: [0, 1, 2]                # optional: every point once per seed

Every (point, seed) runs as one call of the command's function on its own
config, checked like the command line. The run directory holds ``results.csv``
(every row the points produced, with ``point``, ``seed`` and a ``grid.<key>``
column per grid key; one row per grid point when each point is a single
row), ``points.csv`` with the mean and 95 % confidence interval over seeds of
every numeric column when there are several seeds, ``config.json`` with every
point's resolved configuration, and a copy of the file as ``experiment.yaml``.

Commands that sample over seeds themselves (``coe``, ``coe-serve``,
``coe-fleet``: ``--seeds N``) run one seed per (point, seed) when the file
lists ``seeds``; without ``seeds`` each point is the command's own mean and
95 % CI over its default seeds (the ``*_ci95*`` columns of results.csv).

The file is read with aliases refused and its size bounded (64 KiB), so a
hostile file fails fast with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError

MAX_FILE_BYTES = 64 * 1024
MAX_POINTS = 100_000
SET_PREFIX = "set."


@dataclass(frozen=True)
class ExperimentFile:
    command: str
    options: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    combine: str  # "product" or "zip"
    seeds: tuple[int, ...] | None
    description: str = ""
    name: str = ""


def _read(path: str | Path) -> Any:
    import yaml

    p = Path(path)
    label = "experiment file"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(label, str(path), f"a readable YAML file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(label, str(path), f"a file of at most {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.AliasEvent):
                raise ConfigError(label, str(path), "YAML without aliases (*name)")
        return yaml.safe_load(text)
    except ConfigError:
        raise
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConfigError(label, str(path), f"valid YAML ({first})") from None


def parse_experiment(doc: Any, source: str = "experiment file") -> ExperimentFile:
    """Check the shape of an experiment file (option values are checked per point)."""
    from sn40l_emu.experiments.registry import EXPERIMENTS

    if not isinstance(doc, dict):
        raise ConfigError(source, type(doc).__name__, "a mapping with command, options, grid, seeds")
    known = {"command", "options", "grid", "seeds", "description", "name"}
    extra = sorted(set(map(str, doc)) - known)
    if extra:
        raise ConfigError(f"{source}.{extra[0]}", doc[extra[0]], "one of the keys " + ", ".join(sorted(known)))
    command = doc.get("command")
    if command not in EXPERIMENTS:
        raise ConfigError("command", command, ", ".join(EXPERIMENTS))
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError("options", options, "a mapping of option name to value")
    grid_doc = doc.get("grid") or {}
    if not isinstance(grid_doc, dict) or len(grid_doc) > 1 or (grid_doc and next(iter(grid_doc)) not in
                                                                ("product", "zip")):
        raise ConfigError("grid", grid_doc, "a mapping with one key, product or zip, of option -> list")
    combine, grid = next(iter(grid_doc.items())) if grid_doc else ("product", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"grid.{combine}", grid, "a mapping of option name to a non-empty list of values")
    if combine == "zip" and len({len(v) for v in grid.values()}) > 1:
        raise ConfigError("grid.zip", {k: len(v) for k, v in grid.items()}, "lists of equal length")
    seeds = doc.get("seeds")
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError("seeds", seeds, "a non-empty list of integers >= 0")
    return ExperimentFile(str(command), dict(options), {str(k): list(v) for k, v in grid.items()}, combine,
                          tuple(seeds) if seeds is not None else None, str(doc.get("description", "")),
                          str(doc.get("name", "")))


def load_experiment(path: str | Path) -> ExperimentFile:
    return parse_experiment(_read(path), str(path))


def points(ef: ExperimentFile) -> list[dict[str, Any]]:
    """The grid points in order: dicts of grid key -> value."""
    keys = list(ef.grid)
    if not keys:
        return [{}]
    if ef.combine == "zip":
        combos: list[tuple[Any, ...]] = list(zip(*(ef.grid[k] for k in keys), strict=False))
    else:
        total = 1
        for k in keys:
            total *= len(ef.grid[k])
        if total > MAX_POINTS:
            raise ConfigError("grid.product", f"{total} points", f"at most {MAX_POINTS} points")
        combos = list(itertools.product(*(ef.grid[k] for k in keys)))
    return [dict(zip(keys, c, strict=False)) for c in combos]


def _knob(key: str, value: Any) -> str:
    return f"{key[len(SET_PREFIX):]}={value}"


def point_config(ef: ExperimentFile, point: Mapping[str, Any], seed: int | None) -> Any:
    """The command's config at one point: options, then the point's values, then the seed."""
    from sn40l_emu.experiments.options import from_kwargs
    from sn40l_emu.experiments.registry import experiment

    cls = experiment(ef.command).config_class()
    kw: dict[str, Any] = {}
    sets: list[str] = []
    for src in (ef.options, point):
        for k, v in src.items():
            if k.startswith(SET_PREFIX):
                sets.append(_knob(k, v))
            elif k in ("set", "overrides"):
                sets += [v] if isinstance(v, str) else [str(x) for x in v]
            else:
                kw[k] = v
    if sets:
        kw["set"] = tuple(sets)
    if seed is not None:
        kw["seed"] = seed
        if "n_seeds" in {f.name for f in dataclasses.fields(cls)} and "seeds" not in kw and "n_seeds" not in kw:
            kw["seeds"] = 1  # the file's seeds are the draws: one per (point, seed), aggregated in points.csv
    return from_kwargs(cls, kw)


# Commands whose config takes lists: points that differ only in these fields run as one call (the
# command's own sweep, sharing its nodes and program caches; every row still starts from a
# power-cycled node, so a row's nanoseconds do not depend on what else ran), then each point
# takes its rows back by key.
_MERGE_FIELDS = {"coe": ("platforms", "experts", "batch_sizes", "tokens")}


def _merged_runs(command: str, cfgs: Sequence[Any], progress: bool) -> list[list[dict[str, Any]]] | None:
    """Rows per config when they can share sweeps (``None``: run each config on its own)."""
    import json
    from dataclasses import replace

    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.options import to_jsonable
    from sn40l_emu.experiments.registry import experiment

    fields = _MERGE_FIELDS.get(command)
    if fields is None:
        return None
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        rest = {k: v for k, v in to_jsonable(cfg).items() if k not in fields}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(i)
    out: list[list[dict[str, Any]]] = [[] for _ in cfgs]
    for members in groups.values():
        first = cfgs[members[0]]
        union = {f: tuple(dict.fromkeys(v for i in members for v in getattr(cfgs[i], f))) for f in fields}
        names = {p: load_profile(p, list(first.overrides)).name for p in union["platforms"]}
        if len(set(names.values())) < len(names):
            return None  # two profiles share a name: rows could not be told apart
        rows = experiment(command).run(replace(first, **union), progress=progress)
        by = {(r["platform"], r["experts"], r["batch"], r["tokens"]): r for r in rows}
        for i in members:
            c = cfgs[i]
            out[i] = [dict(by[(names[p], n, b, t)]) for p in c.platforms for n in c.experts
                      for b in c.batch_sizes for t in c.tokens]
    return out


def run_experiment(ef: ExperimentFile, *, progress: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, resolved point configs); every config is built and checked before the first point runs."""
    from tqdm import tqdm

    from sn40l_emu.experiments.options import to_jsonable
    from sn40l_emu.experiments.registry import experiment

    exp = experiment(ef.command)
    seeds: Sequence[int | None] = ef.seeds or (None,)
    todo = [(i, pt, s, point_config(ef, pt, s)) for i, pt in enumerate(points(ef)) for s in seeds]
    merged = _merged_runs(ef.command, [t[3] for t in todo], progress)
    rows: list[dict[str, Any]] = []
    resolved = []
    for k, (i, pt, s, cfg) in enumerate(tqdm(todo, disable=None if progress and merged is None else True,
                                             desc=f"run {ef.command}", unit="point")):
        resolved.append({"point": i, "seed": s, "grid": pt, "config": to_jsonable(cfg)})
        point_rows = merged[k] if merged is not None else exp.run(cfg, progress=False)
        for r in point_rows:
            tags: dict[str, Any] = {"point": i}
            if ef.seeds is not None:
                tags["seed"] = s
            tags.update({f"grid.{key}": v if not isinstance(v, list) else ",".join(map(str, v))
                         for key, v in pt.items()})
            rows.append({**tags, **r})
    return rows, resolved


def by_point(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Mean, 95 % confidence interval (Student t) and count over seeds of every numeric column, per point."""
    import pandas as pd
    from scipy import stats

    from sn40l_emu.experiments.rundir import rows_frame

    df = rows_frame(rows)
    keys = ["point"] + [c for c in df.columns if c.startswith("grid.")]
    num = [c for c in df.select_dtypes("number").columns
           if c not in ("point", "seed", "seeds") and "_ci95" not in c]  # a command's own CIs are not averaged
    out = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=False))
        n = len(g)
        rec["n"] = n
        for c in num:
            col = g[c].astype(float)
            mean = float(col.mean())
            half = float(stats.t.ppf(0.975, n - 1) * col.std(ddof=1) / n**0.5) if n > 1 else float("nan")
            rec[f"{c}.mean"] = mean
            rec[f"{c}.ci95"] = half
        out.append(rec)
    return pd.DataFrame(out)


def cmd_run(args: argparse.Namespace) -> int:
    import shutil

    from sn40l_emu.experiments import rundir

    ef = load_experiment(args.file)
    pts = points(ef)
    n_seeds = len(ef.seeds or (None,))
    configs = [point_config(ef, pt, s) for pt in pts for s in (ef.seeds or (None,))]  # checked before output
    if args.dry_run:
        print(f"{args.file}: {ef.command}, {len(pts)} grid point(s) x {n_seeds} seed(s) = {len(configs)} run(s)")
        for i, pt in enumerate(pts):
            print(f"  point {i}: " + (", ".join(f"{k}={v}" for k, v in pt.items()) or "(options only)"))
        return 0
    from sn40l_emu.experiments.options import to_jsonable

    resolved_doc = {"file": str(args.file), "command": ef.command, "description": ef.description,
                    "options": dict(ef.options), "grid": {ef.combine: dict(ef.grid)},
                    "seeds": list(ef.seeds) if ef.seeds else None,
                    "points": [to_jsonable(c) for c in configs]}
    run = rundir.prepare(f"run-{ef.name or Path(args.file).stem}", resolved_doc, out=args.out,
                         overwrite=args.overwrite, json_path=args.json, argv=getattr(args, "argv", None))
    shutil.copyfile(args.file, run.file("experiment.yaml"))
    rows, resolved = run_experiment(ef, progress=not args.no_progress)
    run.write_json("config.json", {**resolved_doc, "points": resolved})
    run.write_json("results.json", {"rows": rows})
    run.write_rows("results", rows)
    lines = [f"{ef.description or ef.command}: {len(pts)} grid point(s) x {n_seeds} seed(s), "
             f"{len(rows)} row(s) in results.csv"]
    if ef.seeds is not None and len(ef.seeds) > 1:
        agg = by_point(rows)
        agg.to_csv(run.file("points.csv"), index=False)
        lines.append(f"mean and 95 % CI over {n_seeds} seeds per point in points.csv")
    if args.json:
        rundir.write_copy(args.json, {"rows": rows})
    run.finish("\n\n".join(lines), rows=len(rows), headline=lines[0])
    print("\n".join(lines))
    print(f"wrote {run.path}/")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import output_args

    p = sub.add_parser("run", help="run an experiment file: one command over a grid of options and seeds",
                       description=(__doc__ or "").split("\n\n", 1)[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.yaml", help="experiment file (see experiments/ for the paper's)")
    p.add_argument("--dry-run", action="store_true", help="list the grid points and stop (default: run them)")
    output_args(p, "also write every row as JSON here")
    p.set_defaults(func=cmd_run)
