"""`sn40l-emu coe`: the CoE serving sweep (docs/model.md §4-5), and `sn40l-emu capacity`.

For every platform, one node is built once and power-cycled between rows, so
every row starts from the same pristine node (a cold HBM cache holding only
the router and the KV reservation). Rows share the platform's program book and
cost-reuse tables: the same prefill and decode steps recur in every row.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError, OutOfMemory


@dataclass(frozen=True)
class SweepConfig:
    platforms: tuple[str, ...] = ("sn40l", "dgx-a100", "dgx-h100")
    experts: tuple[int, ...] = (1, 10, 25, 50, 100, 150)
    batches: tuple[int, ...] = (1, 8)
    tokens: tuple[int, ...] = (20, 200)
    model: str = "llama2-7b"
    prompt_len: int = 128
    workload: str = "zipf:1.0"
    policy: str = "lru"
    seed: int = 0
    n_batches: int = 1
    backend: str = "ray"
    overrides: tuple[str, ...] = ()


def _ints(field: str, text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(field, text, "comma-separated positive integers, e.g. 1,10,25") from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(field, text, "comma-separated positive integers, e.g. 1,10,25")
    return vals


def run_sweep(cfg: SweepConfig, out_dir: Path | None = None, *, progress: bool = True,
              trace_path: Path | None = None) -> list[dict[str, Any]]:
    """Run every (platform, experts, batch, tokens) row; returns JSON-able rows."""
    from tqdm import tqdm

    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.coe.workload import batches as make_batches
    from sn40l_emu.coe.workload import expert_sequence, parse_workload
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.trace import write_chrome_trace
    from sn40l_emu.workload import load_model

    model = load_model(cfg.model)
    spec = parse_workload(cfg.workload)
    try:
        policy = CachePolicy(cfg.policy.lower())
    except ValueError:
        raise ConfigError("--policy", cfg.policy, "one of " + ", ".join(p.value for p in CachePolicy)) from None
    profiles = [load_profile(p, list(cfg.overrides)) for p in cfg.platforms]
    combos = [(n, b, t) for n in cfg.experts for b in cfg.batches for t in cfg.tokens]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(profiles) * len(combos), disable=not progress, desc="coe sweep", unit="row")
    trace_done = False
    for prof in profiles:
        with open_node(prof, backend=Backend(cfg.backend)) as node:
            # identical decoder layers and identical decode steps reuse their measured cost (exact)
            reuse = CostReuse(node)
            book = LayerPrograms(ProgramBook())
            for n, b, t in combos:
                bar.set_postfix_str(f"{prof.name} experts={n} batch={b} tokens={t}")
                node.reset()
                future = expert_sequence(spec, n, b * cfg.n_batches, cfg.seed) if policy is CachePolicy.OPT else None
                setup = CoESetup(model, n, b, cfg.prompt_len, t, policy)
                coord = CoECoordinator(node, setup, reuse=reuse, book=book, future=future)
                row: dict[str, Any] = {
                    "platform": prof.name, "experts": n, "batch": b, "tokens": t,
                    "total_ns": 0, "router_ns": 0, "switch_ns": 0, "expert_ns": 0,
                    "hbm_hits": 0, "hbm_misses": 0, "oom": False,
                    "experts_in_hbm_at_once": coord.capacity.hbm_experts,
                    "experts_per_node": coord.capacity.total_experts,
                }
                try:
                    row["load_ns"] = coord.load()
                    wall0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
                    all_events = []
                    for batch in make_batches(spec, n, b, cfg.n_batches, cfg.prompt_len, t, cfg.seed):
                        res = coord.run_batch(batch)
                        for k in ("router_ns", "switch_ns", "expert_ns"):
                            row[k] += getattr(res, k)
                        row["hbm_hits"] += res.hits
                        row["hbm_misses"] += res.misses
                        all_events += res.events
                    for k in ("router_ns", "switch_ns", "expert_ns"):
                        row[k] //= cfg.n_batches
                    row["total_ns"] = row["router_ns"] + row["switch_ns"] + row["expert_ns"]
                    row["wall_s"] = round(time.perf_counter() - wall0, 4)  # wall-clock ok: measures the emulator itself
                    if trace_path is not None and not trace_done and prof.name == cfg.platforms[0] \
                            and b == max(cfg.batches) and t == min(cfg.tokens) and n == max(
                                x for x in cfg.experts if x <= coord.capacity.total_experts):
                        write_chrome_trace(trace_path, all_events, metadata={"row": row})
                        trace_done = True
                except OutOfMemory as exc:
                    row["oom"] = True
                    row["oom_reason"] = str(exc)
                rows.append(row)
                bar.update(1)
    bar.close()
    return rows


def _summary(rows: list[dict[str, Any]]) -> str:
    from sn40l_emu.report import table

    view = [{**r, "total_ms": None if r["oom"] else r["total_ns"] / 1e6,
             "router_ms": r["router_ns"] / 1e6, "switch_ms": r["switch_ns"] / 1e6,
             "expert_ms": r["expert_ns"] / 1e6, "oom": "OOM" if r["oom"] else ""} for r in rows]
    return table(view, [("platform", "platform"), ("experts", "experts"), ("batch", "batch"),
                        ("tokens", "tokens"), ("total_ms", "total ms"), ("router_ms", "router ms"),
                        ("switch_ms", "switch ms"), ("expert_ms", "expert ms"), ("hbm_hits", "hits"),
                        ("hbm_misses", "misses"), ("oom", "oom")])


def cmd_coe(args: argparse.Namespace) -> int:
    from sn40l_emu.experiments.plots_coe import breakdown_per_platform, latency_vs_experts

    cfg = SweepConfig(
        platforms=tuple(p.strip() for p in args.platforms.split(",") if p.strip()),
        experts=_ints("--experts", args.experts), batches=_ints("--batch", args.batch),
        tokens=_ints("--tokens", args.tokens), model=args.model, prompt_len=args.prompt_len,
        workload=args.workload, policy=args.policy, seed=args.seed, n_batches=args.batches,
        backend=args.backend, overrides=tuple(args.overrides))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
    rows = run_sweep(cfg, out, progress=not args.no_progress, trace_path=out / "coe_trace.json")
    wall = time.perf_counter() - t0  # wall-clock ok: measures the emulator itself
    print(_summary(rows))
    pngs = latency_vs_experts(rows, out)
    pngs += breakdown_per_platform(rows, out, max(cfg.batches), min(cfg.tokens))
    doc = {"rows": rows, "config": {**cfg.__dict__, "profiles": cfg.platforms}, "wall_s": round(wall, 2)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=2, default=list))
    _write_resolved(cfg, out)
    print(f"\nwrote {args.json}, {out / 'coe_trace.json'} and {len(pngs)} plots in {out}/ "
          f"({wall:.1f} s wall)")
    return 0


def _write_resolved(cfg: SweepConfig, out: Path) -> None:
    from sn40l_emu.config import load_profile

    resolved = {p: load_profile(p, list(cfg.overrides)).to_json() for p in cfg.platforms}
    (out / "coe_config.json").write_text(json.dumps({"sweep": cfg.__dict__, "profiles": resolved},
                                                    indent=2, default=list))


def cmd_capacity(args: argparse.Namespace) -> int:
    from sn40l_emu.coe.capacity import experts_per_node, nodes_needed
    from sn40l_emu.config import load_profile
    from sn40l_emu.report import table
    from sn40l_emu.workload import load_model

    model = load_model(args.model)
    kv = args.batch * (args.prompt_len + args.tokens) * model.kv_bytes_per_token
    rows = []
    for plat in (p.strip() for p in args.platforms.split(",") if p.strip()):
        prof = load_profile(plat, args.overrides)
        cap = experts_per_node(prof, model.weight_bytes, model.weight_bytes, kv)
        for n in _ints("--experts", args.experts):
            try:
                need = nodes_needed(n, prof, model.weight_bytes, model.weight_bytes, kv)
            except OutOfMemory:
                need = -1
            served = cap.home_tier(min(n, cap.total_experts)).value if cap.total_experts else "none"
            rows.append({"platform": plat, "model": model.name, "experts": n,
                         "experts_per_node": cap.total_experts, "nodes_needed": need,
                         "experts_in_hbm": cap.hbm_experts, "served_from": served,
                         "limiting_tier": cap.limiting_tier.value})
    print(table(rows, [("platform", "platform"), ("model", "model"), ("experts", "experts"),
                       ("experts_in_hbm", "in HBM at once"), ("experts_per_node", "per node"),
                       ("nodes_needed", "nodes needed"), ("served_from", "served from"),
                       ("limiting_tier", "runs out of")]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import profile_args

    p = sub.add_parser("coe", help="CoE serving sweep: latency and footprint vs number of experts")
    p.add_argument("--platforms", default="sn40l,dgx-a100,dgx-h100")
    p.add_argument("--experts", default="1,10,25,50,100,150")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--tokens", default="20,200")
    p.add_argument("--model", default="llama2-7b")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--policy", default="lru", help="HBM expert cache policy: lru, lfu or opt")
    p.add_argument("--workload", default="zipf:1.0", help="zipf:S, uniform, or a JSONL trace file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=1, help="batches per row (the cache stays warm between them)")
    p.add_argument("--backend", default="ray", choices=["ray", "local"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default="out/coe.json")
    p.add_argument("--out", default="out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override a field of every platform's profile")
    p.set_defaults(func=cmd_coe)

    c = sub.add_parser("capacity", help="experts per node and nodes needed, per platform")
    c.add_argument("--model", default="llama2-7b")
    c.add_argument("--experts", default="1,10,25,50,100,150")
    c.add_argument("--platforms", default="sn40l,dgx-a100,dgx-h100")
    c.add_argument("--batch", type=int, default=8, help="KV reservation: batch x (prompt + tokens)")
    c.add_argument("--prompt-len", type=int, default=128)
    c.add_argument("--tokens", type=int, default=200)
    c.add_argument("--json", default="")
    _ = profile_args
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    c.set_defaults(func=cmd_capacity)
