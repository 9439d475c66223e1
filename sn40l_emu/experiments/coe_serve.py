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
import json
from pathlib import Path
from typing import Any


def serving_requests(n_experts: int, n_requests: int, rate_per_s: float, *, workload: str = "zipf:1.0",
                     prompt_len: int = 128, tokens: int = 20, seed: int = 0, trace: str = "") -> list[Any]:
    """The requests of a run: a CSV arrival trace (``trace``), or Poisson arrivals and the workload."""
    from sn40l_emu.coe.fleet_arrivals import read_trace_csv
    from sn40l_emu.coe.workload import expert_sequence, parse_workload, poisson_arrivals, requests

    spec = parse_workload(workload)
    if trace:
        n_rows = len(Path(trace).read_text().splitlines()) if Path(trace).is_file() else 0
        drawn = expert_sequence(spec, n_experts, n_rows, seed) if n_rows else None  # no expert column
        return read_trace_csv(trace, n_experts, drawn)
    arrivals = poisson_arrivals(rate_per_s, n_requests, seed)
    return requests(spec, n_experts, n_requests, prompt_len, tokens, seed, arrivals)


def run_serving(platform: str, model_name: str, n_experts: int, batch: int, rate_per_s: float,
                n_requests: int, policies: list[str], *, workload: str = "zipf:1.0", prompt_len: int = 128,
                tokens: int = 20, seed: int = 0, backend: str = "ray", overrides: tuple[str, ...] = (),
                progress: bool = True, trace: str = "", slo: Any = None, exact: bool = False,
                keep_records: bool = False) -> list[dict[str, Any]]:
    """One row per cache policy. Costs are measured on the node once per shape
    (:mod:`sn40l_emu.coe.fleet_costs`) unless ``exact``, which drives the coordinator
    through every request (same nanoseconds, far more wall time)."""
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.fleet_costs import CostServer, measure_node_costs
    from sn40l_emu.coe.serving import simulate_serving
    from sn40l_emu.coe.serving_metrics import SLO, serving_metrics
    from sn40l_emu.config import load_profile
    from sn40l_emu.workload import load_model

    model = load_model(model_name)
    reqs = serving_requests(n_experts, n_requests, rate_per_s, workload=workload, prompt_len=prompt_len,
                            tokens=tokens, seed=seed, trace=trace)
    slo = slo or SLO()
    rows = []
    prof = load_profile(platform, list(overrides))
    with open_node(prof, backend=Backend(backend), trace=False) as raw_node:
        costs = None if exact else measure_node_costs(
            raw_node, model, n_experts, batch, sorted({(r.prompt_len, r.output_tokens) for r in reqs}))
        for pol in policies:
            policy = CachePolicy(pol)
            future = [r.expert for r in reqs] if policy is CachePolicy.OPT else None
            if costs is not None:
                serve = CostServer(costs, policy, future).serve
            else:
                serve = _exact_server(raw_node, model, n_experts, batch, reqs, policy, future, progress)
            out = simulate_serving(reqs, batch, serve)
            row: dict[str, Any] = {
                "platform": platform, "policy": pol, "experts": n_experts, "batch": batch,
                "rate_per_s": rate_per_s if not trace else None, "trace": trace or None,
                "requests": len(reqs), "throughput_per_s": out.throughput_per_s,
                "p50_ns": out.latency_p50_ns, "p90_ns": out.latency_p90_ns, "p99_ns": out.latency_p99_ns,
                "hit_rate": out.hit_rate, "batches": out.n_batches,
                "costs": "exact" if costs is None else ("interpolated" if costs.interpolated else "measured"),
                **serving_metrics(out.records, slo)}
            if keep_records:
                row["records"] = out.records
            rows.append(row)
    return rows


def _exact_server(node: Any, model: Any, n_experts: int, batch: int, reqs: list[Any], policy: Any,
                  future: Any, progress: bool) -> Any:
    """Every batch through the coordinator on the node's sockets (the reference path)."""
    from tqdm import tqdm

    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.coe.serving import BatchTiming
    from sn40l_emu.coe.workload import Request
    from sn40l_emu.engine.layer_reuse import LayerPrograms, LayerReuseNode
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse

    lnode = LayerReuseNode(node)
    reuse, book = CostReuse(lnode), LayerPrograms(ProgramBook())
    lnode.reset()
    max_prompt = max(r.prompt_len for r in reqs)
    max_tokens = max(r.output_tokens for r in reqs)
    coord = CoECoordinator(lnode, CoESetup(model, n_experts, batch, max_prompt, max_tokens, policy),
                           reuse=reuse, book=book, future=future)
    coord.load()
    bar = tqdm(total=len(reqs), disable=not progress, desc="coe-serve", unit="req")

    def serve(b: list[Request]) -> BatchTiming:
        res = coord.run_batch(b)
        start = res.requests[0].start_ns - res.router_ns - res.switch_ns
        bar.update(len(b))
        ends = tuple(r.end_ns - start for r in res.requests)
        return BatchTiming(res.total_ns, ends, res.hits, res.misses)

    return serve


def cmd_serve(args: argparse.Namespace) -> int:
    from sn40l_emu.coe.serving_metrics import SLO
    from sn40l_emu.report import table

    def ms(v: float | None) -> int | None:
        return None if v is None else int(round(v * 1e6))

    slo = SLO(ms(getattr(args, "slo_ttft_ms", None)), ms(getattr(args, "slo_tpot_ms", None)),
              ms(getattr(args, "slo_latency_ms", None)))
    rows = run_serving(args.platform, args.model, args.experts, args.batch, args.rate, args.requests,
                       [p.strip() for p in args.policies.split(",")], workload=args.workload,
                       prompt_len=args.prompt_len, tokens=args.tokens, seed=args.seed,
                       backend=args.backend, overrides=tuple(args.overrides), progress=not args.no_progress,
                       trace=getattr(args, "trace", ""), slo=slo, exact=getattr(args, "exact", False),
                       keep_records=bool(getattr(args, "plot", "")))

    def to_ms(v: Any) -> Any:
        return None if v is None else v / 1e6

    view = [{**r, **{k.replace("_ns", "_ms"): to_ms(r[k]) for k in r if k.endswith("_ns")}} for r in rows]
    print(table(view, [("platform", "platform"), ("policy", "policy"), ("throughput_per_s", "req/s"),
                       ("latency_mean_ms", "mean ms"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
                       ("p99_ms", "p99 ms"), ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"),
                       ("tpot_mean_ms", "TPOT mean ms"), ("tpot_p99_ms", "TPOT p99 ms"),
                       ("goodput_per_s", "goodput req/s"), ("hit_rate", "hit rate"), ("batches", "batches")]))
    print(f"SLO: TTFT <= {slo.ttft_ns and slo.ttft_ns / 1e6} ms, TPOT <= {slo.tpot_ns and slo.tpot_ns / 1e6} ms, "
          f"latency <= {slo.latency_ns and slo.latency_ns / 1e6} ms (None: not checked); "
          f"costs {rows[0]['costs']} on the node")
    if getattr(args, "plot", ""):
        from sn40l_emu.experiments.plots_serve import plot_latency_cdf

        plot_latency_cdf(rows, args.plot)
        print(f"CDF plot: {args.plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": [{k: v for k, v in r.items() if k != "records"}
                                                        for r in rows]}, indent=2))
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
    p.add_argument("--trace", default="", help="arrival trace CSV: timestamp, expert|domain, prompt_tokens, "
                   "output_tokens (Azure: TIMESTAMP, ContextTokens, GeneratedTokens)")
    p.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput: TTFT bound (ms)")
    p.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput: TPOT bound (ms)")
    p.add_argument("--slo-latency-ms", type=float, default=None, help="goodput: latency bound (ms)")
    p.add_argument("--plot", default="", help="latency CDF per policy (PNG path)")
    p.add_argument("--exact", action="store_true", help="drive the coordinator through every request")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    p.set_defaults(func=cmd_serve)
