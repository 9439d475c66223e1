"""`sn40l-emu coe-serve`: CoE as a server (beyond the paper's batch experiment).

Requests arrive as a Poisson process or from a CSV trace, queue FIFO, and are
served in batches of up to B; the HBM expert cache stays warm between batches.
The node's costs (router, expert switch, prefill, decode) are measured on its
sockets once per shape and reused (:mod:`sn40l_emu.coe.fleet_costs`);
``--exact`` drives the coordinator through every request instead. Reported per
cache policy: throughput, mean and p50/p90/p99 latency, TTFT, TPOT, goodput
against an SLO and hit rate, and a latency CDF plot.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError
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
MAX_REQUESTS = 10_000_000


@dataclass(frozen=True)
class ServeConfig:
    """One serving run per cache policy on one platform (Poisson arrivals, FIFO queue, batches of up to B)."""

    profile: str = profile_field("sn40l")
    model: str = option("llama2-7b", "expert model: shipped name or path to a config.json")
    experts: int = option(100, "experts in the composition", lo=1, hi=MAX_EXPERTS)
    batch: int = option(8, "largest batch the server forms from its queue", lo=1, hi=MAX_BATCH)
    rate_per_s: float = option(2.0, "mean arrival rate (Poisson)", flag="rate", lo=1e-6, hi=1e9,
                               unit="requests/s")
    requests: int = option(200, "requests to serve", lo=1, hi=MAX_REQUESTS)
    policies: tuple[str, ...] = option(("lru", "lfu", "opt"), "HBM expert cache policies to compare",
                                       choices=POLICY_NAMES)
    workload: str = option("zipf:1.0", "which expert each prompt picks: zipf:S, uniform, or a JSONL trace file")
    prompt_len: int = option(128, "prompt tokens per request", lo=1, hi=MAX_TOKENS)
    tokens: int = option(20, "output tokens per request", lo=1, hi=MAX_TOKENS)
    seed: int = option(0, "first seed of arrivals and prompts", lo=0, hi=MAX_SEED)
    n_seeds: int = option(5, "seeds (seed, seed+1, ...): every figure is their mean with a 95-percent confidence "
                             "interval (Student t, n-1 dof)", flag="seeds", lo=1, hi=MAX_SEEDS)
    trace: str = option("", "arrival trace CSV (timestamp, expert|domain, prompt_tokens, output_tokens; the Azure "
                            "LLM inference trace's TIMESTAMP, ContextTokens, GeneratedTokens also work); "
                            "replaces --rate/--requests/--prompt-len/--tokens", metavar="CSV")
    slo_ttft_ms: float = option(0.0, "goodput: time-to-first-token bound (0 = not checked)", lo=0.0, hi=1e9,
                                unit="ms")
    slo_tpot_ms: float = option(0.0, "goodput: time-per-output-token bound (0 = not checked)", lo=0.0, hi=1e9,
                                unit="ms")
    slo_latency_ms: float = option(0.0, "goodput: end-to-end latency bound (0 = not checked)", lo=0.0, hi=1e9,
                                   unit="ms")
    exact: bool = option(False, "drive the coordinator through every request instead of serving from costs "
                                "measured once per shape (same nanoseconds, far more wall time)")
    backend: str = backend_field()
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


def run_serve_config(cfg: ServeConfig, *, progress: bool = True, keep_records: bool = False) -> list[dict[str, Any]]:
    """:func:`run_serving` for a declared config."""
    from sn40l_emu.coe.serving_metrics import SLO

    def ns(ms: float) -> int | None:
        return None if ms <= 0 else int(round(ms * 1e6))

    slo = SLO(ns(cfg.slo_ttft_ms), ns(cfg.slo_tpot_ms), ns(cfg.slo_latency_ms))
    return run_serving(cfg.profile, cfg.model, cfg.experts, cfg.batch, cfg.rate_per_s, cfg.requests,
                       list(cfg.policies), workload=cfg.workload, prompt_len=cfg.prompt_len, tokens=cfg.tokens,
                       seed=cfg.seed, backend=cfg.backend, overrides=cfg.overrides, progress=progress,
                       trace=cfg.trace, slo=slo, exact=cfg.exact, keep_records=keep_records, n_seeds=cfg.n_seeds)


def serving_requests(n_experts: int, n_requests: int, rate_per_s: float, *, workload: str = "zipf:1.0",
                     prompt_len: int = 128, tokens: int = 20, seed: int = 0, trace: str = "") -> list[Any]:
    """The requests of a run: a CSV arrival trace (``trace``), or Poisson arrivals and the workload."""
    from sn40l_emu.coe.fleet_arrivals import read_rows, read_trace_csv
    from sn40l_emu.coe.workload import expert_sequence, parse_workload, poisson_arrivals, requests

    spec = parse_workload(workload)
    if trace:
        n_rows = len(read_rows(trace)) if Path(trace).is_file() else 0  # bounded, UTF-8 only
        drawn = expert_sequence(spec, n_experts, n_rows, seed) if n_rows else None  # no expert column
        return read_trace_csv(trace, n_experts, drawn)
    arrivals = poisson_arrivals(rate_per_s, n_requests, seed)
    return requests(spec, n_experts, n_requests, prompt_len, tokens, seed, arrivals)


def run_serving(platform: str, model_name: str, n_experts: int, batch: int, rate_per_s: float,
                n_requests: int, policies: list[str], *, workload: str = "zipf:1.0", prompt_len: int = 128,
                tokens: int = 20, seed: int = 0, backend: str = "ray", overrides: tuple[str, ...] = (),
                progress: bool = True, trace: str = "", slo: Any = None, exact: bool = False,
                keep_records: bool = False, n_seeds: int = 1) -> list[dict[str, Any]]:
    """One row per cache policy. Costs are measured on the node once per shape
    (:mod:`sn40l_emu.coe.fleet_costs`) unless ``exact``, which drives the coordinator
    through every request (same nanoseconds, far more wall time).

    With ``n_seeds`` > 1 every policy serves the streams of seeds ``seed`` ..
    ``seed + n_seeds - 1`` (the costs measured once for all of them) and each figure
    is the mean over the seeds with its 95 % CI (``p99_ns`` and ``p99_ci95_ns``, ...;
    :mod:`sn40l_emu.experiments.ci`); ``samples`` keeps each seed's figures, and
    ``records`` (with ``keep_records``) every seed's requests."""
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.fleet_costs import CostServer, measure_node_costs
    from sn40l_emu.coe.serving import simulate_serving
    from sn40l_emu.coe.serving_metrics import SLO, serving_metrics
    from sn40l_emu.config import load_profile
    from sn40l_emu.workload import load_model

    model = load_model(model_name)
    streams = {s: serving_requests(n_experts, n_requests, rate_per_s, workload=workload, prompt_len=prompt_len,
                                   tokens=tokens, seed=s, trace=trace) for s in seed_list(seed, n_seeds)}
    shapes = sorted({(r.prompt_len, r.output_tokens) for reqs in streams.values() for r in reqs})
    slo = slo or SLO()
    rows = []
    prof = load_profile(platform, list(overrides))
    with open_node(prof, backend=Backend(backend), trace=False) as raw_node:
        costs = None if exact else measure_node_costs(raw_node, model, n_experts, batch, shapes)
        for pol in policies:
            policy = CachePolicy(pol)
            samples: list[dict[str, Any]] = []
            records: list[Any] = []
            for s, reqs in streams.items():
                future = [r.expert for r in reqs] if policy is CachePolicy.OPT else None
                if costs is not None:
                    serve = CostServer(costs, policy, future).serve
                else:
                    serve = _exact_server(raw_node, model, n_experts, batch, reqs, policy, future, progress)
                out = simulate_serving(reqs, batch, serve)
                samples.append({"seed": s, "requests": len(reqs), "throughput_per_s": out.throughput_per_s,
                                "p50_ns": out.latency_p50_ns, "p90_ns": out.latency_p90_ns,
                                "p99_ns": out.latency_p99_ns, "hit_rate": out.hit_rate, "batches": out.n_batches,
                                **serving_metrics(out.records, slo)})
                records += out.records
            keys = [k for k in samples[0] if k not in ("seed", "requests")]
            row: dict[str, Any] = {
                "platform": platform, "policy": pol, "experts": n_experts, "batch": batch,
                "rate_per_s": rate_per_s if not trace else None, "trace": trace or None,
                "requests": samples[0]["requests"]}
            if n_seeds == 1:
                row.update({k: samples[0][k] for k in keys})  # one draw: its own figures, no interval
            else:
                stats = aggregate(samples, keys)
                row.update({k: stats[k] for k in keys})
                row.update({ci_key(k): stats[ci_key(k)] for k in keys})
            row["costs"] = "exact" if costs is None else ("interpolated" if costs.interpolated else "measured")
            row["seeds"] = n_seeds
            row["samples"] = samples
            if keep_records:
                row["records"] = records
            rows.append(row)
    return rows


def _exact_server(node: Any, model: Any, n_experts: int, batch: int, reqs: list[Any], policy: Any,
                  future: Any, progress: bool) -> Any:
    """Every batch through the coordinator on the node's sockets (the reference path)."""
    from tqdm import tqdm

    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.coe.serving import BatchTiming
    from sn40l_emu.coe.workload import Request
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse

    reuse, book = CostReuse(node), LayerPrograms(ProgramBook())
    node.reset()
    max_prompt = max(r.prompt_len for r in reqs)
    max_tokens = max(r.output_tokens for r in reqs)
    coord = CoECoordinator(node, CoESetup(model, n_experts, batch, max_prompt, max_tokens, policy),
                           reuse=reuse, book=book, future=future)
    coord.load()
    bar = tqdm(total=len(reqs), disable=not progress, desc="coe-serve", unit="req")

    def serve(b: list[Request]) -> BatchTiming:
        res = coord.run_batch(b)
        start = res.start_ns
        bar.update(len(b))
        ends = tuple(r.end_ns - start for r in res.requests)
        return BatchTiming(res.total_ns, ends, res.hits, res.misses)

    return serve


def cmd_serve(args: argparse.Namespace) -> int:
    from sn40l_emu.coe.workload import parse_workload
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.experiments.plots_serve import plot_latency_cdf
    from sn40l_emu.report import table
    from sn40l_emu.workload import load_model

    cfg = from_args(ServeConfig, args)
    load_model(cfg.model)
    parse_workload(cfg.workload)
    if cfg.trace and not Path(cfg.trace).is_file():
        raise ConfigError("--trace", cfg.trace, "an existing CSV file")
    resolved = {"serve": to_jsonable(cfg), "profile": load_profile(cfg.profile, list(cfg.overrides)).to_json()}
    run = rundir.prepare("coe-serve", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    rows = run_serve_config(cfg, progress=not args.no_progress, keep_records=True)
    png = plot_latency_cdf(rows, run.file("coe_serve_cdf.png"))
    samples = [{"platform": r["platform"], "policy": r["policy"]} | x for r in rows for x in r["samples"]]
    rows = [{k: v for k, v in r.items() if k not in ("records", "samples")} for r in rows]

    def to_ms(v: Any) -> Any:
        return None if v is None else v / 1e6

    view = [{**r, **{k.replace("_ns", "_ms"): to_ms(r[k]) for k in r if k.endswith("_ns")}} for r in rows]
    for v in view:  # mean ± 95 % CI where there are several seeds
        for k in ("latency_mean_ms", "p99_ms", "ttft_p99_ms", "tpot_mean_ms", "goodput_per_s"):
            ci = v.get(k.replace("_ms", "_ci95_ms") if k.endswith("_ms") else k + "_ci95")
            if v.get(k) is not None and ci is not None:
                v[k] = f"{v[k]:,.4g} ± {ci:,.2g}"
    text = table(view, [("platform", "platform"), ("policy", "policy"), ("throughput_per_s", "req/s"),
                        ("latency_mean_ms", "mean ms"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
                        ("p99_ms", "p99 ms"), ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"),
                        ("tpot_mean_ms", "TPOT mean ms"), ("tpot_p99_ms", "TPOT p99 ms"),
                        ("goodput_per_s", "goodput req/s"), ("hit_rate", "hit rate"), ("batches", "batches")])
    seeds_text = (f"{cfg.n_seeds} seeds ({cfg.seed}..{cfg.seed + cfg.n_seeds - 1}): every figure is the mean, "
                  "± the 95 % confidence interval (Student t, n-1 dof) where shown; the others' CIs are in "
                  "results.csv" if cfg.n_seeds > 1 else f"seed {cfg.seed}: one draw, no confidence interval")
    slo_text = (f"SLO: TTFT <= {cfg.slo_ttft_ms or '-'} ms, TPOT <= {cfg.slo_tpot_ms or '-'} ms, "
                f"latency <= {cfg.slo_latency_ms or '-'} ms ('-': not checked); costs {rows[0]['costs']} on the node")
    print(text)
    print(seeds_text)
    print(slo_text)
    doc = {"rows": rows, "config": resolved["serve"]}
    run.write_json("results.json", doc)
    run.write_rows("results", rows)
    run.write_rows("samples", samples)
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish(f"```\n{text}\n```\n\n{seeds_text}\n\n{slo_text}\n\n![latency CDF]({Path(png).name})", rows=len(rows))
    print(f"\nlatency CDF: {png}\nwrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("coe-serve", help="CoE serving: arrivals (Poisson or a CSV trace), queueing, latency, "
                                         "TTFT, TPOT and goodput per cache policy",
                       description=(__doc__ or "").split("\n\n", 1)[-1].replace("``", "").replace(":mod:", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, ServeConfig)
    output_args(p)
    p.set_defaults(func=cmd_serve)
