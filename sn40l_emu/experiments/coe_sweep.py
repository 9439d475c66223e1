"""`sn40l-emu coe`: the CoE serving sweep (docs/model.md §4-5), and `sn40l-emu capacity`.

For every platform, one node is built once and power-cycled between rows, so
every row starts from the same pristine node (a cold HBM cache holding only
the router and the KV reservation). Rows share the platform's program book and
cost-reuse tables: the same prefill and decode steps recur in every row.

A row is a random draw (which expert each prompt picks), so it runs once per
seed (``--seeds N``: seeds ``--seed`` .. ``--seed`` + N - 1, each on a freshly
power-cycled node) and every sampled figure is reported as the mean over the
seeds with its 95 % confidence interval (Student t, n - 1 dof;
:mod:`sn40l_emu.experiments.ci`): ``total_ns`` is the mean and
``total_ci95_ns`` its half-width, and so on. ``samples.csv`` holds every
(row, seed). Repeated seeds are cheap: the programs and measured step costs
are cached per platform, only the routing and the cache differ.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError, OutOfMemory
from sn40l_emu.experiments.ci import MAX_SEEDS, aggregate, ci_key, seed_list
from sn40l_emu.experiments.options import (
    MAX_BATCH,
    MAX_EXPERTS,
    MAX_SEED,
    MAX_TOKENS,
    backend_field,
    check_fields,
    option,
    overrides_field,
    profile_field,
)

POLICY_NAMES = ("lru", "lfu", "opt")  # the values of sn40l_emu.coe.eviction.CachePolicy (checked by a test)


@dataclass(frozen=True)
class SweepConfig:
    """The CoE sweep: one row per (platform, experts, batch size, output tokens) (docs/model.md §4-5)."""

    platforms: tuple[str, ...] = profile_field(("sn40l", "dgx-a100", "dgx-h100"), many=True)
    experts: tuple[int, ...] = option((1, 10, 25, 50, 100, 150), "numbers of experts in the composition",
                                      lo=1, hi=MAX_EXPERTS)
    batch_sizes: tuple[int, ...] = option((1, 8), "batch sizes (requests per batch)", flag="batch",
                                          lo=1, hi=MAX_BATCH)
    tokens: tuple[int, ...] = option((20, 200), "output tokens per request", lo=1, hi=MAX_TOKENS)
    model: str = option("llama2-7b", "expert model: shipped name or path to a config.json")
    prompt_len: int = option(128, "prompt tokens per request", lo=1, hi=MAX_TOKENS)
    workload: str = option("zipf:1.0", "which expert each prompt picks: zipf:S, uniform, or a JSONL trace file")
    policy: str = option("lru", "HBM expert cache policy", choices=POLICY_NAMES)
    seed: int = option(0, "first seed of the prompt draw", lo=0, hi=MAX_SEED)
    n_seeds: int = option(5, "seeds per row (seed, seed+1, ...): every sampled figure is their mean with a "
                             "95-percent confidence interval (Student t, n-1 dof)", flag="seeds", lo=1, hi=MAX_SEEDS)
    n_batches: int = option(1, "batches per row (the cache stays warm between them)", flag="batches",
                            lo=1, hi=MAX_BATCH)
    backend: str = backend_field()
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


# where every nanosecond of a batch went (coordinator.BatchResult): total_ns is their sum
_PHASE_KEYS = ("router_ns", "switch_ns", "program_load_ns", "argument_load_ns", "host_ns", "expert_ns")

# Figures that depend on the prompt draw: each is the mean over seeds, with a 95 % CI (experiments/ci.py).
SAMPLED = ("total_ns", *_PHASE_KEYS, "hbm_hits", "hbm_misses", "load_ns")

TraceRow = tuple[str, int, int, int]  # (platform, experts, batch, tokens)


def parse_trace_row(text: str) -> TraceRow | None:
    """``PLATFORM:EXPERTS:BATCH:TOKENS`` (e.g. ``sn40l:150:8:20``) -> the row to trace; "" -> None."""
    if not text:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 4:
            raise ValueError
        return parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        raise ConfigError("--trace-row", text, "PLATFORM:EXPERTS:BATCH:TOKENS, e.g. sn40l:150:8:20") from None


def default_trace_row(cfg: SweepConfig, platform: str, n: int, b: int, t: int, total_experts: int) -> bool:
    """Without --trace-row: the first platform, largest batch, fewest tokens, most experts that fit."""
    return (platform == cfg.platforms[0] and b == max(cfg.batch_sizes) and t == min(cfg.tokens)
            and n == max((x for x in cfg.experts if x <= total_experts), default=-1))


def run_sweep(cfg: SweepConfig, out_dir: Path | None = None, *, progress: bool = True,
              trace_path: Path | None = None, trace_row: TraceRow | None = None) -> list[dict[str, Any]]:
    """Run every (platform, experts, batch, tokens) row; returns JSON-able rows.

    With ``trace_path`` one row is traced: ``trace_row`` (platform, experts, batch, tokens), or
    :func:`default_trace_row`. Reused decode steps and layers are drawn as their shifted copies."""
    from tqdm import tqdm

    from sn40l_emu.cluster.session import Backend, open_nodes
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.coe.workload import batches as make_batches
    from sn40l_emu.coe.workload import expert_sequence, parse_workload
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.trace import expand_reused, write_chrome_trace
    from sn40l_emu.workload import load_model

    if trace_row is not None and (trace_row[0] not in cfg.platforms or trace_row[1] not in cfg.experts
                                  or trace_row[2] not in cfg.batch_sizes or trace_row[3] not in cfg.tokens):
        raise ConfigError("--trace-row", ":".join(map(str, trace_row)), "a row of this sweep "
                          f"(platforms {','.join(cfg.platforms)}; experts, batch, tokens from the sweep)")
    model = load_model(cfg.model)
    spec = parse_workload(cfg.workload)
    try:
        policy = CachePolicy(cfg.policy.lower())
    except ValueError:
        raise ConfigError("--policy", cfg.policy, "one of " + ", ".join(p.value for p in CachePolicy)) from None
    profiles = [load_profile(p, list(cfg.overrides)) for p in cfg.platforms]
    combos = [(n, b, t) for n in cfg.experts for b in cfg.batch_sizes for t in cfg.tokens]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(profiles) * len(combos), disable=not progress, desc="coe sweep", unit="row")
    trace_done = False
    with open_nodes(profiles, backend=Backend(cfg.backend)) as nodes:
        for prof, node in nodes:
            # identical decoder layers and identical decode steps reuse their measured cost (exact)
            reuse = CostReuse(node)
            book = LayerPrograms(ProgramBook())
            for n, b, t in combos:
                bar.set_postfix_str(f"{prof.name} experts={n} batch={b} tokens={t}")
                row: dict[str, Any] = {"platform": prof.name, "experts": n, "batch": b, "tokens": t}
                samples: list[dict[str, Any]] = []
                wall0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
                for seed in seed_list(cfg.seed, cfg.n_seeds):
                    node.reset()
                    future = (expert_sequence(spec, n, b * cfg.n_batches, seed)
                              if policy is CachePolicy.OPT else None)
                    setup = CoESetup(model, n, b, cfg.prompt_len, t, policy)
                    coord = CoECoordinator(node, setup, reuse=reuse, book=book, future=future)
                    row["experts_in_hbm_at_once"] = coord.capacity.hbm_experts
                    row["experts_per_node"] = coord.capacity.total_experts
                    sample: dict[str, Any] = {"seed": seed, **dict.fromkeys(_PHASE_KEYS, 0),
                                              "hbm_hits": 0, "hbm_misses": 0}
                    try:
                        sample["load_ns"] = coord.load()
                        all_events = []
                        for batch in make_batches(spec, n, b, cfg.n_batches, cfg.prompt_len, t, seed):
                            res = coord.run_batch(batch)
                            for k in _PHASE_KEYS:
                                sample[k] += getattr(res, k)
                            sample["hbm_hits"] += res.hits
                            sample["hbm_misses"] += res.misses
                            all_events += res.events
                    except OutOfMemory as exc:
                        row["oom_reason"] = str(exc)
                        break  # the footprint does not depend on the draw: every seed would run out
                    for k in _PHASE_KEYS:
                        sample[k] //= cfg.n_batches
                    sample["total_ns"] = sum(sample[k] for k in _PHASE_KEYS)
                    samples.append(sample)
                    chosen = (trace_row == (prof.name, n, b, t) if trace_row is not None else
                              default_trace_row(cfg, prof.name, n, b, t, coord.capacity.total_experts))
                    if trace_path is not None and not trace_done and chosen:
                        events, left = expand_reused(all_events)
                        write_chrome_trace(trace_path, events, metadata={
                            "row": {**row, **sample}, "reused_runs_not_expanded": left,
                            "hbm_at_start": "cold: router and KV reservation only" if not coord.gpu else
                            ("every expert preloaded" if coord.all_in_hbm else "cold cache; experts in host DRAM")})
                        trace_done = True
                oom = "oom_reason" in row
                head = {k: row.pop(k) for k in ("platform", "experts", "batch", "tokens")}
                stats: dict[str, Any] = ({k: 0 for k in SAMPLED} | {ci_key(k): None for k in SAMPLED} if oom
                                         else aggregate(samples, SAMPLED))
                # the parts' means, each rounded to whole ns, still add up to the total (within 3 ns of
                # the mean of the totals); the total's CI is from the totals themselves
                stats["total_ns"] = sum(stats[k] for k in _PHASE_KEYS)
                row = {**head, **{k: stats[k] for k in SAMPLED if k != "load_ns"}, "oom": oom, **row,
                       **({"load_ns": stats["load_ns"]} if not oom else {}),
                       **{ci_key(k): stats[ci_key(k)] for k in SAMPLED if k != "load_ns"},
                       "seeds": len(samples)}
                if not oom:
                    row["wall_s"] = round(time.perf_counter() - wall0, 4)  # wall-clock ok: measures the emulator
                row["samples"] = samples
                rows.append(row)
                bar.update(1)
    bar.close()
    return rows


def _ms(ns: Any) -> str | None:
    """Milliseconds for a table: fixed point with thousands separators (never 1.083e+04); blank if None."""
    if ns is None:
        return None
    ms = ns / 1e6
    return f"{ms:,.1f}" if ms >= 10 else f"{ms:,.3f}"


def output_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for tables and CSV: an OOM row leaves its timings blank (None), never 0 ms; the per-seed
    samples are left out (:func:`sample_rows` has them)."""
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "samples"}
        if r.get("oom"):
            for k in ("total_ns", *_PHASE_KEYS, "load_ns", "wall_s"):
                if k in r:
                    r[k] = None
        out.append(r)
    return out


def sample_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (sweep row, seed) with that draw's own figures (``samples.csv``)."""
    return [{k: r[k] for k in ("platform", "experts", "batch", "tokens")} | s
            for r in rows for s in r.get("samples", ())]


def _pm(ns: Any, ci: Any) -> str | None:
    """``mean +- half-width`` in ms for a table (the mean alone where there is no interval)."""
    text = _ms(ns)
    if text is None or ci is None:
        return text
    return f"{text} ± {_ms(ci)}"


def _summary(rows: list[dict[str, Any]]) -> str:
    """Every row; router, switch, expert ms, hits and misses are means over the seeds (CIs in results.csv)."""
    from sn40l_emu.report import table

    view = [{**r, "total_ms": _pm(r["total_ns"], r.get("total_ci95_ns")), "router_ms": _ms(r["router_ns"]),
             "switch_ms": _ms(r["switch_ns"]), "expert_ms": _ms(r["expert_ns"]), "host_ms": _ms(r["host_ns"]),
             "load_ms": _ms(None if r["total_ns"] is None else r["program_load_ns"] + r["argument_load_ns"]),
             "oom": "OOM" if r["oom"] else ""} for r in output_rows(rows)]
    return table(view, [("platform", "platform"), ("experts", "experts"), ("batch", "batch"),
                        ("tokens", "tokens"), ("total_ms", "total ms (mean ± 95 % CI)"), ("router_ms", "router ms"),
                        ("switch_ms", "switch ms"), ("load_ms", "prog+arg load ms"), ("host_ms", "host ms"),
                        ("expert_ms", "expert ms"), ("hbm_hits", "hits"),
                        ("hbm_misses", "misses"), ("oom", "oom")])


def resolved_config(cfg: SweepConfig) -> dict[str, Any]:
    """The sweep and every platform's resolved profile (loading them also checks --profile/--set now)."""
    from sn40l_emu.coe.workload import parse_workload
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.options import to_jsonable
    from sn40l_emu.workload import load_model

    load_model(cfg.model)
    parse_workload(cfg.workload)
    return {"sweep": to_jsonable(cfg),
            "profiles": {p: load_profile(p, list(cfg.overrides)).to_json() for p in cfg.platforms}}


def cmd_coe(args: argparse.Namespace) -> int:
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.coe_conclusion import conclusion, headline_table
    from sn40l_emu.experiments.options import from_args
    from sn40l_emu.experiments.plots_coe import breakdown_per_platform, latency_vs_experts

    cfg = from_args(SweepConfig, args)
    run = rundir.prepare("coe", resolved_config(cfg), out=args.out, overwrite=args.overwrite,
                         json_path=args.json, argv=getattr(args, "argv", None))
    out = run.path
    t0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
    rows = run_sweep(cfg, out, progress=not args.no_progress, trace_path=run.file("coe_trace.json"),
                     trace_row=parse_trace_row(getattr(args, "trace_row", "")))
    wall = time.perf_counter() - t0  # wall-clock ok: measures the emulator itself
    if not (out / "coe_trace.json").exists():
        run.files.remove("coe_trace.json")
    table_text = _summary(rows)
    print(headline_table(rows))
    pngs = latency_vs_experts(rows, out)
    pngs += breakdown_per_platform(rows, out, max(cfg.batch_sizes), min(cfg.tokens))
    for png in pngs:
        run.file(Path(png).name)
    doc = {"rows": rows, "config": {**resolved_config(cfg)["sweep"], "profiles": list(cfg.platforms)},
           "wall_s": round(wall, 2)}
    run.write_json("results.json", doc)
    run.write_rows("results", output_rows(rows))
    run.write_rows("samples", sample_rows(rows))
    if args.json:
        rundir.write_copy(args.json, doc)
    text = conclusion(rows, cfg, plots=[Path(p) for p in pngs], run_dir=out)
    run.finish(f"## Conclusion\n\n{text}\n\n## Rows\n\n```\n{table_text}\n```", rows=len(rows),
               headline=text.splitlines()[0] if text else "")
    print()
    print(text)
    print(f"\nwrote {out}/ (results.json, results.csv, samples.csv, summary.md, config.json, {len(pngs)} plots"
          f"{', coe_trace.json' if 'coe_trace.json' in run.files else ''})"
          f"{' and ' + str(args.json) if args.json else ''} ({wall:.1f} s wall)")
    return 0


@dataclass(frozen=True)
class CapacityConfig:
    """Experts per node and nodes needed (docs/model.md §4): pure arithmetic on the profiles, no node."""

    platforms: tuple[str, ...] = profile_field(("sn40l", "dgx-a100", "dgx-h100"), many=True)
    model: str = option("llama2-7b", "expert model: shipped name or path to a config.json")
    experts: tuple[int, ...] = option((1, 10, 25, 50, 100, 150), "numbers of experts in the composition",
                                      lo=1, hi=MAX_EXPERTS)
    batch: int = option(8, "batch size of the KV-cache reservation: batch x (prompt + tokens)",
                        lo=1, hi=MAX_BATCH)
    prompt_len: int = option(128, "prompt tokens per request (KV reservation)", lo=1, hi=MAX_TOKENS)
    tokens: int = option(200, "output tokens per request (KV reservation)", lo=1, hi=MAX_TOKENS)
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


def run_capacity(cfg: CapacityConfig) -> list[dict[str, Any]]:
    """One row per (platform, experts); ``nodes_needed`` is None when one expert does not fit a node."""
    from sn40l_emu.coe.capacity import experts_per_node, nodes_needed
    from sn40l_emu.config import load_profile
    from sn40l_emu.workload import load_model

    model = load_model(cfg.model)
    kv = cfg.batch * (cfg.prompt_len + cfg.tokens) * model.kv_bytes_per_token
    rows: list[dict[str, Any]] = []
    for plat in cfg.platforms:
        prof = load_profile(plat, list(cfg.overrides))
        cap = experts_per_node(prof, model.weight_bytes, model.weight_bytes, kv)
        for n in cfg.experts:
            need: int | None
            try:
                need = nodes_needed(n, prof, model.weight_bytes, model.weight_bytes, kv)
            except OutOfMemory:
                need = None
            served = cap.home_tier(min(n, cap.total_experts)).value if cap.total_experts else "none"
            rows.append({"platform": plat, "model": model.name, "experts": n,
                         "experts_per_node": cap.total_experts, "nodes_needed": need,
                         "experts_in_hbm": cap.hbm_experts, "served_from": served,
                         "limiting_tier": cap.limiting_tier.value,
                         "experts_at_tp8_latency": cap.latency_experts,
                         "fits_at_tp8_latency": n <= cap.latency_experts,
                         "switch_ms": round(cap.switch_ns / 1e6, 3)})
    return rows


def cmd_capacity(args: argparse.Namespace) -> int:
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.report import table
    from sn40l_emu.workload import load_model

    cfg = from_args(CapacityConfig, args)
    load_model(cfg.model)
    resolved = {"capacity": to_jsonable(cfg),
                "profiles": {p: load_profile(p, list(cfg.overrides)).to_json() for p in cfg.platforms}}
    run = rundir.prepare("capacity", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    rows = run_capacity(cfg)
    view = [{**r, "nodes_needed": "never" if r["nodes_needed"] is None else r["nodes_needed"]} for r in rows]
    text = table(view, [("platform", "platform"), ("model", "model"), ("experts", "experts"),
                        ("experts_in_hbm", "in HBM at once"), ("experts_per_node", "per node"),
                        ("nodes_needed", "nodes needed"), ("served_from", "served from"),
                        ("limiting_tier", "runs out of"), ("experts_at_tp8_latency", "at TP8 latency"),
                        ("switch_ms", "switch ms")])
    print(text)
    doc = {"rows": rows, "config": resolved["capacity"]}
    run.write_json("results.json", doc)
    run.write_rows("results", rows)
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish(f"```\n{text}\n```\n\n'never': one expert with its KV reservation does not fit a node.",
               rows=len(rows))
    print(f"\nwrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("coe", help="CoE serving sweep: latency and footprint vs number of experts",
                       description="Composition of Experts on each platform: one row per (platform, experts, "
                                   "batch, output tokens), every row on a freshly power-cycled node.")
    add_options(p, SweepConfig)
    output_args(p)
    p.add_argument("--trace-row", default="", metavar="PLATFORM:EXPERTS:BATCH:TOKENS",
                   help="the sweep row to trace, e.g. sn40l:150:8:20 (default: first platform, largest batch, "
                        "fewest tokens, most experts that fit)")
    p.set_defaults(func=cmd_coe)

    c = sub.add_parser("capacity", help="experts per node and nodes needed, per platform",
                       description="How many experts fit one node of each platform, which memory tier serves "
                                   "them, and how many nodes a composition needs (no emulation: arithmetic).")
    add_options(c, CapacityConfig)
    output_args(c)
    c.set_defaults(func=cmd_capacity)
