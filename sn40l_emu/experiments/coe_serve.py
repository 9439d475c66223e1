"""`sn40l-emu coe-serve`: CoE as a server (beyond the paper's batch experiment).

Requests arrive as a Poisson process, queue FIFO, and are served in batches of
up to B by the coordinator on the emulated node; the HBM expert cache stays
warm between batches. Reported per cache policy: throughput, latency
percentiles (p50/p90/p99) and hit rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


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
    from sn40l_emu.report import table

    rows = run_serving(args.platform, args.model, args.experts, args.batch, args.rate, args.requests,
                       [p.strip() for p in args.policies.split(",")], workload=args.workload,
                       prompt_len=args.prompt_len, tokens=args.tokens, seed=args.seed,
                       backend=args.backend, overrides=tuple(args.overrides), progress=not args.no_progress)
    view = [{**r, "p50_ms": r["p50_ns"] / 1e6, "p90_ms": r["p90_ns"] / 1e6, "p99_ms": r["p99_ns"] / 1e6}
            for r in rows]
    print(table(view, [("platform", "platform"), ("policy", "policy"), ("throughput_per_s", "req/s"),
                       ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"),
                       ("hit_rate", "hit rate"), ("batches", "batches")]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("coe-serve", help="CoE serving: Poisson arrivals, queueing, percentiles per cache policy")
    p.add_argument("--platform", default="sn40l")
    p.add_argument("--model", default="llama2-7b")
    p.add_argument("--experts", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rate", type=float, default=2.0, help="requests per second (Poisson)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--policies", default="lru,lfu,opt")
    p.add_argument("--workload", default="zipf:1.0")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="ray", choices=["ray", "local"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default="")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    p.set_defaults(func=cmd_serve)
