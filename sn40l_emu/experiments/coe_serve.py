"""`sn40l-emu coe-serve`: CoE as a server (beyond the paper's batch experiment).

Requests arrive as a Poisson process, queue FIFO, and are served in batches of
up to B by the coordinator on the emulated node; the HBM expert cache stays
warm between batches. Reported per cache policy: throughput, latency
percentiles (p50/p90/p99) and hit rate.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

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
    seed: int = option(0, "seed of arrivals and prompts", lo=0, hi=MAX_SEED)
    backend: str = backend_field()
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


def run_serve_config(cfg: ServeConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """:func:`run_serving` for a declared config."""
    return run_serving(cfg.profile, cfg.model, cfg.experts, cfg.batch, cfg.rate_per_s, cfg.requests,
                       list(cfg.policies), workload=cfg.workload, prompt_len=cfg.prompt_len, tokens=cfg.tokens,
                       seed=cfg.seed, backend=cfg.backend, overrides=cfg.overrides, progress=progress)


def run_serving(platform: str, model_name: str, n_experts: int, batch: int, rate_per_s: float,
                n_requests: int, policies: list[str], *, workload: str = "zipf:1.0", prompt_len: int = 128,
                tokens: int = 20, seed: int = 0, backend: str = "ray", overrides: tuple[str, ...] = (),
                progress: bool = True) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.coe.serving import BatchTiming, simulate_serving
    from sn40l_emu.coe.workload import Request, parse_workload, poisson_arrivals, requests
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.workload import load_model

    model = load_model(model_name)
    spec = parse_workload(workload)
    arrivals = poisson_arrivals(rate_per_s, n_requests, seed)
    reqs = requests(spec, n_experts, n_requests, prompt_len, tokens, seed, arrivals)
    rows = []
    prof = load_profile(platform, list(overrides))
    bar = tqdm(total=len(policies) * n_requests, disable=not progress, desc="coe-serve", unit="req")
    with open_node(prof, backend=Backend(backend)) as node:
        reuse, book = CostReuse(node), LayerPrograms(ProgramBook())
        for pol in policies:
            policy = CachePolicy(pol)
            node.reset()
            future = [r.expert for r in reqs] if policy is CachePolicy.OPT else None
            coord = CoECoordinator(node, CoESetup(model, n_experts, batch, prompt_len, tokens, policy),
                                   reuse=reuse, book=book, future=future)
            coord.load()

            def serve(b: list[Request], coord: CoECoordinator = coord) -> BatchTiming:
                res = coord.run_batch(b)
                start = res.requests[0].start_ns - res.router_ns - res.switch_ns
                bar.update(len(b))
                return BatchTiming(res.total_ns, tuple(r.end_ns - start for r in res.requests),
                                   res.hits, res.misses)

            out = simulate_serving(reqs, batch, serve)
            rows.append({"platform": platform, "policy": pol, "experts": n_experts, "batch": batch,
                         "rate_per_s": rate_per_s, "requests": n_requests,
                         "throughput_per_s": out.throughput_per_s, "p50_ns": out.latency_p50_ns,
                         "p90_ns": out.latency_p90_ns, "p99_ns": out.latency_p99_ns,
                         "hit_rate": out.hit_rate, "batches": out.n_batches})
    bar.close()
    return rows


def cmd_serve(args: argparse.Namespace) -> int:
    from sn40l_emu.coe.workload import parse_workload
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.report import table
    from sn40l_emu.workload import load_model

    cfg = from_args(ServeConfig, args)
    load_model(cfg.model)
    parse_workload(cfg.workload)
    resolved = {"serve": to_jsonable(cfg), "profile": load_profile(cfg.profile, list(cfg.overrides)).to_json()}
    run = rundir.prepare("coe-serve", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    rows = run_serve_config(cfg, progress=not args.no_progress)
    view = [{**r, "p50_ms": r["p50_ns"] / 1e6, "p90_ms": r["p90_ns"] / 1e6, "p99_ms": r["p99_ns"] / 1e6}
            for r in rows]
    text = table(view, [("platform", "platform"), ("policy", "policy"), ("throughput_per_s", "req/s"),
                        ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"),
                        ("hit_rate", "hit rate"), ("batches", "batches")])
    print(text)
    doc = {"rows": rows, "config": resolved["serve"]}
    run.write_json("results.json", doc)
    run.write_rows("results", rows)
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish(f"```\n{text}\n```", rows=len(rows))
    print(f"\nwrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("coe-serve", help="CoE serving: Poisson arrivals, queueing, percentiles per cache policy",
                       description="CoE as a server: requests arrive as a Poisson process, queue FIFO and are "
                                   "served in batches; throughput, latency percentiles and HBM hit rate per "
                                   "cache policy.")
    add_options(p, ServeConfig)
    output_args(p)
    p.set_defaults(func=cmd_serve)
