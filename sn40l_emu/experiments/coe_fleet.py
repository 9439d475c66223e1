"""`sn40l-emu coe-fleet`: a Composition of Experts served by a fleet of nodes behind one router.

N emulated nodes (each its own eight sockets: in this process, or socket
actors placed node by node across the Ray nodes of a cluster) serve one
arrival stream (Poisson or a CSV trace). Each node's costs -- router, expert
switch, prefill, decode -- are measured on its sockets once per shape
(:mod:`sn40l_emu.coe.fleet_costs`; node 0 in full, every other node by a probe
that must agree), then the global router and the nodes' queues and HBM caches
run in virtual time (:mod:`sn40l_emu.coe.fleet_sim`) per placement policy.

The footprint study then asks, for each platform and each composition size E
at the arrival rate R: what is the smallest fleet whose p99 latency meets the
target? (SN40L paper, Fig. 13; the DGX nodes are the emulator's DGX A100 and
H100 profiles, measured the same way.)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

FLEET_POLICIES = ("hash", "popularity", "least-loaded")  # sn40l_emu.coe.fleet_policy.FleetPolicy values
PLATFORMS = ("sn40l", "dgx-a100", "dgx-h100")


@dataclass(frozen=True)
class FleetConfig:
    """One arrival stream served by N emulated nodes per placement policy, then the footprint study."""

    profile: str = profile_field("sn40l")
    model: str = option("llama2-7b", "expert model: shipped name or path to a config.json")
    nodes: int = option(8, "emulated nodes in the fleet (8 sockets each)", lo=1, hi=1024)
    experts: int = option(100, "experts in the composition", lo=1, hi=MAX_EXPERTS)
    batch: int = option(8, "largest batch a node forms from its queue", lo=1, hi=MAX_BATCH)
    rate_per_s: float = option(20.0, "mean arrival rate (Poisson)", flag="rate", lo=1e-6, hi=1e9,
                               unit="requests/s")
    requests: int = option(2000, "requests in the stream", lo=1, hi=10_000_000)
    policies: tuple[str, ...] = option(FLEET_POLICIES, "placement and replication policies to compare",
                                       choices=FLEET_POLICIES)
    workload: str = option("zipf:1.0", "which expert each prompt picks: zipf:S, uniform, or a JSONL trace file")
    trace: str = option("", "arrival trace CSV (see coe-serve --trace)", metavar="CSV")
    prompt_len: int = option(128, "prompt tokens per request", lo=1, hi=MAX_TOKENS)
    tokens: int = option(20, "output tokens per request", lo=1, hi=MAX_TOKENS)
    seed: int = option(0, "first seed of arrivals and prompts", lo=0, hi=MAX_SEED)
    n_seeds: int = option(5, "seeds (seed, seed+1, ...): every figure, nodes needed too, is their mean with a "
                             "95-percent confidence interval (Student t, n-1 dof)", flag="seeds", lo=1, hi=MAX_SEEDS)
    backend: str = backend_field("local")
    address: str = option("", "Ray cluster to join (default: RAY_ADDRESS or a private local Ray)",
                          metavar="HOST:PORT")
    p99_target_ms: float = option(2000.0, "footprint: the p99 latency target", lo=1e-3, hi=1e9, unit="ms")
    footprint_platforms: tuple[str, ...] = option(PLATFORMS, "footprint: platforms to size", choices=PLATFORMS)
    footprint_experts: tuple[int, ...] = option((50, 100, 150, 200), "footprint: composition sizes",
                                                lo=1, hi=MAX_EXPERTS)
    footprint_policy: str = option("best", "footprint: placement policy, or best (per point, the one needing "
                                           "fewest nodes)", choices=(*FLEET_POLICIES, "best"))
    footprint_requests: int = option(2000, "footprint: requests per point", lo=1, hi=10_000_000)
    max_nodes: int = option(64, "footprint: largest fleet tried", lo=1, hi=4096)
    no_footprint: bool = option(False, "skip the footprint study")
    overrides: tuple[str, ...] = overrides_field()

    def __post_init__(self) -> None:
        check_fields(self)


def run_fleet(*, platform: str = "sn40l", model_name: str = "llama2-7b", nodes: int = 8,
              experts: int = 100, batch: int = 8, rate_per_s: float = 20.0, n_requests: int = 2000,
              policies: tuple[str, ...] = ("hash", "popularity", "least-loaded"),
              workload: str = "zipf:1.0", prompt_len: int = 128, tokens: int = 20, seed: int = 0,
              trace: str = "", backend: str = "local", address: str = "",
              overrides: tuple[str, ...] = (), footprint_policy: str = "best", n_seeds: int = 1) -> dict[str, Any]:
    """Bring up the fleet, measure, and serve the stream once per placement policy.

    With ``n_seeds`` > 1 each policy serves the streams of seeds ``seed`` .. ``seed + n_seeds - 1``
    (the node costs measured once for all) and each figure is the mean over the seeds with its
    95 % CI (``latency_p99_ns`` and ``latency_p99_ci95_ns``, ...); ``samples`` keeps each seed's."""
    from sn40l_emu.cluster.session import Backend
    from sn40l_emu.coe.fleet_costs import measure_node_costs, probe_node
    from sn40l_emu.coe.fleet_nodes import open_fleet
    from sn40l_emu.coe.fleet_policy import FleetPolicy
    from sn40l_emu.coe.fleet_sim import simulate_fleet
    from sn40l_emu.coe.serving_metrics import serving_metrics
    from sn40l_emu.config import load_profile
    from sn40l_emu.errors import ConfigError, EmuError
    from sn40l_emu.experiments.coe_serve import serving_requests
    from sn40l_emu.workload import load_model

    if nodes < 1:
        raise ConfigError("nodes", nodes, "an integer >= 1")
    allowed = ", ".join(p.value for p in FleetPolicy)
    bad = [p for p in policies if p not in {q.value for q in FleetPolicy}]
    if bad or not policies:
        raise ConfigError("policies", ",".join(bad), allowed)
    if footprint_policy not in {*(q.value for q in FleetPolicy), "best"}:
        raise ConfigError("footprint policy", footprint_policy, f"{allowed}, best")
    pols = [FleetPolicy(p) for p in policies]
    model = load_model(model_name)
    prof = load_profile(platform, list(overrides))
    streams = {s: serving_requests(experts, n_requests, rate_per_s, workload=workload, prompt_len=prompt_len,
                                   tokens=tokens, seed=s, trace=trace) for s in seed_list(seed, n_seeds)}
    shapes = sorted({(r.prompt_len, r.output_tokens) for reqs in streams.values() for r in reqs})
    t0 = time.perf_counter()  # wall-clock ok: reported as bring-up time, never in a result
    with open_fleet(prof, nodes, Backend(backend), address) as fleet:
        t_up = time.perf_counter() - t0  # wall-clock ok
        where: list[Any] = [getattr(n, "status", list)() for n in fleet] if backend == "ray" else []
        t1 = time.perf_counter()  # wall-clock ok
        costs = measure_node_costs(fleet[0], model, experts, batch, shapes)
        t_measure = time.perf_counter() - t1  # wall-clock ok
        want = (costs.router_ns[1], costs.switch_ns[1] if not costs.all_in_hbm else 0,
                costs.request_ns(*shapes[0])[1])
        for i, node in enumerate(fleet[1:], start=1):
            got = probe_node(node, model, experts, batch, shapes[0])
            if got != want:
                raise EmuError(f"fleet node {i} measured {got} ns, node 0 {want} ns "
                               "(router, switch, request): the nodes are not alike")
        t_probe = time.perf_counter() - t1 - t_measure  # wall-clock ok
    t2 = time.perf_counter()  # wall-clock ok
    rows = []
    for pol in pols:
        samples = []
        for s, reqs in streams.items():
            res = simulate_fleet(reqs, costs, nodes, experts, batch, pol)
            per_node = [0] * nodes
            for n in res.node_of:
                per_node[n] += 1
            samples.append({"seed": s, "hit_rate": res.hits / max(1, res.hits + res.misses),
                            "busiest_node_requests": max(per_node), "idlest_node_requests": min(per_node),
                            **serving_metrics(res.records)})
        keys = [k for k in samples[0] if k != "seed"]
        stats = {k: samples[0][k] for k in keys} if n_seeds == 1 else aggregate(samples, keys)
        rows.append({"platform": platform, "policy": pol.value, "nodes": nodes,
                     "sockets": nodes * prof.sockets, "experts": experts, "batch": batch,
                     "requests": len(next(iter(streams.values()))), "rate_per_s": None if trace else rate_per_s,
                     **{k: stats[k] for k in keys},
                     **({ci_key(k): stats[ci_key(k)] for k in keys} if n_seeds > 1 else {}),
                     "seeds": n_seeds, "samples": samples})
    homes = [sorted({str(s.get("ray_node")) for s in st}) for st in where]
    wall = {"bringup": t_up, "measure_node0": t_measure, "probe_others": t_probe,
            "route_and_serve": time.perf_counter() - t2}  # wall-clock ok
    return {"rows": rows, "costs": costs.to_json(), "bringup_s": round(t_up, 2),
            "wall_s": {k: round(v, 3) for k, v in wall.items()},
            "ray_nodes_used": len({h for hs in homes for h in hs}), "homes": homes, "backend": backend}


def footprint(*, platforms: list[str], experts_list: list[int], model_name: str, batch: int,
              rate_per_s: float, n_requests: int, p99_target_ns: int, max_nodes: int, policy: str,
              workload: str, prompt_len: int, tokens: int, seed: int, trace: str, backend: str,
              measured: dict[str, Any] | None = None, n_seeds: int = 1) -> list[dict[str, Any]]:
    """Smallest fleet per (platform, E) meeting the p99 target; costs measured once per platform.

    ``policy``: one placement policy, or ``best`` (per point and seed, the one needing fewest
    nodes). With ``n_seeds`` > 1 the search runs on each seed's stream; ``nodes_needed`` and
    ``p99_ns`` are the means over the seeds with their 95 % CIs (``nodes_needed`` is None when
    some seed needs more than ``max_nodes``), ``policy`` lists the policies chosen, and
    ``samples`` keeps each seed's answer."""
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.coe.fleet_costs import measure_node_costs
    from sn40l_emu.coe.fleet_footprint import smallest_fleet
    from sn40l_emu.coe.fleet_policy import FleetPolicy
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.coe_serve import serving_requests
    from sn40l_emu.workload import load_model

    model = load_model(model_name)
    rows = []
    seeds = seed_list(seed, n_seeds)
    for plat in platforms:
        streams = {(e, sd): serving_requests(e, n_requests, rate_per_s, workload=workload, prompt_len=prompt_len,
                                             tokens=tokens, seed=sd, trace=trace)
                   for e in experts_list for sd in seeds}
        shapes = sorted({(r.prompt_len, r.output_tokens) for s in streams.values() for r in s})
        costs = (measured or {}).get(plat)
        if costs is None:
            with open_node(load_profile(plat), backend=Backend(backend), trace=False) as node:
                costs = measure_node_costs(node, model, max(experts_list), batch, shapes)
        pols = list(FleetPolicy) if policy == "best" else [FleetPolicy(policy)]
        for e in experts_list:
            samples: list[dict[str, Any]] = []
            for sd in seeds:
                pts = {p: smallest_fleet(streams[(e, sd)], costs, e, batch, p, p99_target_ns, max_nodes)
                       for p in pols}
                met = [(pt.nodes, i, p) for i, (p, pt) in enumerate(pts.items()) if pt.nodes is not None]
                best = min(met)[2] if met else pols[0]
                samples.append({"seed": sd, "policy": best.value, "nodes_needed": pts[best].nodes,
                                "p99_ns": pts[best].p99_ns,
                                "nodes_needed_per_policy": {p.value: q.nodes for p, q in pts.items()},
                                "tried": {p.value: [list(t) for t in q.tried] for p, q in pts.items()}})
            never = any(x["nodes_needed"] is None for x in samples)
            stats = aggregate(samples, ("nodes_needed", "p99_ns"))
            if n_seeds == 1:
                stats = {"nodes_needed": samples[0]["nodes_needed"], "p99_ns": samples[0]["p99_ns"]}
            elif never:
                stats["nodes_needed"] = stats["nodes_needed_ci95"] = None
            rows.append({"platform": plat, "experts": e, "rate_per_s": None if trace else rate_per_s,
                         "p99_target_ns": p99_target_ns,
                         "policy": "/".join(dict.fromkeys(x["policy"] for x in samples)),
                         "nodes_needed": stats["nodes_needed"], "p99_ns": stats["p99_ns"],
                         **({"nodes_needed_ci95": stats["nodes_needed_ci95"], "p99_ci95_ns": stats["p99_ci95_ns"]}
                            if n_seeds > 1 else {}),
                         "node_capacity_experts": costs.total_experts, "node_hbm_experts": costs.hbm_experts,
                         "seeds": n_seeds, "samples": samples})
    return rows


def plot_footprint(rows: list[dict[str, Any]], path: str | Path, max_nodes: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]
    for i, plat in enumerate(dict.fromkeys(r["platform"] for r in rows)):
        pts = [(r["experts"], r["nodes_needed"], r.get("nodes_needed_ci95")) for r in rows if r["platform"] == plat]
        marker, line = styles[i % len(styles)]
        ok = [(e, n, c) for e, n, c in pts if n is not None]
        yerr = [c or 0.0 for _, _, c in ok] if any(c is not None for _, _, c in ok) else None
        ax.errorbar([e for e, _, _ in ok], [n for _, n, _ in ok], yerr=yerr, marker=marker, linestyle=line,
                    capsize=3, label=plat)
        over = [e for e, n, _ in pts if n is None]
        if over:
            ax.scatter(over, [max_nodes] * len(over), marker="x", label=f"{plat}: > {max_nodes} nodes")
    r0 = rows[0]
    rate = f"{r0['rate_per_s']:g} req/s" if r0["rate_per_s"] else "trace arrivals"
    ax.set_title(f"Nodes needed for p99 <= {r0['p99_target_ns'] / 1e6:g} ms ({rate})")
    ax.set_xlabel("experts in the composition")
    seeds = int(r0.get("seeds") or 1)
    ax.set_ylabel("nodes (8 sockets / GPUs each)" + (f"\nmean of {seeds} seeds, bars: 95 % CI" if seeds > 1 else ""))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def cmd_fleet(args: argparse.Namespace) -> int:
    from sn40l_emu.config import load_profile
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args, to_jsonable
    from sn40l_emu.report import table

    cfg = from_args(FleetConfig, args)
    if cfg.trace and not Path(cfg.trace).is_file():
        raise ConfigError("--trace", cfg.trace, "an existing CSV file")
    resolved = {"fleet": to_jsonable(cfg), "profile": load_profile(cfg.profile, list(cfg.overrides)).to_json()}
    run = rundir.prepare("coe-fleet", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    out = run_fleet(platform=cfg.profile, model_name=cfg.model, nodes=cfg.nodes, experts=cfg.experts,
                    batch=cfg.batch, rate_per_s=cfg.rate_per_s, n_requests=cfg.requests, policies=cfg.policies,
                    workload=cfg.workload, prompt_len=cfg.prompt_len, tokens=cfg.tokens, seed=cfg.seed,
                    trace=cfg.trace, backend=cfg.backend, address=cfg.address, overrides=cfg.overrides,
                    footprint_policy=cfg.footprint_policy, n_seeds=cfg.n_seeds)
    samples = [{"platform": r["platform"], "policy": r["policy"]} | x for r in out["rows"] for x in r.pop("samples")]
    view = [{**r, "p50_ms": r["latency_p50_ns"] / 1e6, "p99_ms": r["latency_p99_ns"] / 1e6,
             "ttft_p99_ms": r["ttft_p99_ns"] / 1e6} for r in out["rows"]]
    lines = [f"fleet: {cfg.nodes} x {cfg.profile} nodes ({cfg.nodes * 8} sockets, backend {cfg.backend}), "
             f"{cfg.experts} experts, {out['rows'][0]['requests']} requests",
             table(view, [("policy", "policy"), ("completed", "completed"), ("p50_ms", "p50 ms"),
                          ("p99_ms", "p99 ms"), ("ttft_p99_ms", "TTFT p99 ms"), ("hit_rate", "hit rate"),
                          ("busiest_node_requests", "busiest node"), ("idlest_node_requests", "idlest node")])]
    if cfg.n_seeds > 1:
        lines.append(f"{cfg.n_seeds} seeds ({cfg.seed}..{cfg.seed + cfg.n_seeds - 1}): every figure is the mean over "
                     "the seeds; the 95 % confidence intervals (Student t, n-1 dof) are in results.csv")
    print("\n".join(lines))
    run.write_rows("results", out["rows"])
    run.write_rows("samples", samples)
    if not cfg.no_footprint:
        fp = footprint(platforms=list(cfg.footprint_platforms), experts_list=list(cfg.footprint_experts),
                       model_name=cfg.model, batch=cfg.batch, rate_per_s=cfg.rate_per_s,
                       n_requests=cfg.footprint_requests, p99_target_ns=int(cfg.p99_target_ms * 1e6),
                       max_nodes=cfg.max_nodes, policy=cfg.footprint_policy, workload=cfg.workload,
                       prompt_len=cfg.prompt_len, tokens=cfg.tokens, seed=cfg.seed, trace=cfg.trace,
                       backend="local", n_seeds=cfg.n_seeds)
        out["footprint"] = fp
        fp_text = table([{**r, "nodes": f"> {cfg.max_nodes}" if r["nodes_needed"] is None else
                          r["nodes_needed"] if r.get("nodes_needed_ci95") is None else
                          f"{r['nodes_needed']:.1f} ± {r['nodes_needed_ci95']:.1f}"} for r in fp],
                        [("platform", "platform"), ("experts", "experts"), ("nodes", "nodes needed"),
                         ("policy", "with policy")])
        lines += [f"footprint: smallest fleet with p99 <= {cfg.p99_target_ms:g} ms "
                  f"({cfg.footprint_policy}, {cfg.footprint_requests} requests per point)", fp_text]
        print("\n".join(lines[-2:]))
        run.write_rows("footprint", [{k: v for k, v in r.items() if k != "samples"} for r in fp])
        png = plot_footprint(fp, run.file("fleet_footprint.png"), cfg.max_nodes)
        print(f"plot: {png}")
    run.write_json("results.json", out)
    if args.json:
        rundir.write_copy(args.json, out)
    run.finish("```\n" + "\n".join(lines) + "\n```", rows=len(out["rows"]))
    print(f"wrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("coe-fleet", help="CoE on a fleet of nodes: global router, placement policies, "
                       "footprint study (nodes needed per platform)",
                       description=(__doc__ or "").split("\n\n", 1)[-1].replace("``", "").replace(":mod:", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, FleetConfig)
    output_args(p)
    p.set_defaults(func=cmd_fleet)
