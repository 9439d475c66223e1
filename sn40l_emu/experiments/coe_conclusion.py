"""The conclusion a CoE sweep ends with: a few sentences a researcher can quote.

Read off the rows, nothing recomputed: each platform's latency at the largest
swept composition (150 experts in the paper's sweep), the speedup of the first
platform over the others, how many experts each platform holds in HBM at once
(a larger composition leaves HBM: its experts are switched in from DDR or host memory), where a
platform runs out of memory, and where the plots and the run directory are.

Each latency is the mean over the seeds with its 95 % confidence interval
(Student t, :mod:`sn40l_emu.experiments.ci`). A speedup whose two means differ
by no more than their intervals together is said to be within the CI, and so
is a change between the two largest compositions of one platform: such a
difference may be the prompt draw, not a trend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sn40l_emu.experiments.ci import overlap


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:,.1f} ms" if ms >= 1 else f"{ms:,.3f} ms"


def _pm(r: dict[str, Any]) -> str:
    ci = r.get("total_ci95_ns")
    if ci is None:
        return _ms(r["total_ns"])
    return f"{_ms(r['total_ns'])[:-3]} ± {_ms(ci) if ci else '0 ms'}"  # 0: every draw gave the same ns


def _noise(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return overlap(a["total_ns"], a.get("total_ci95_ns"), b["total_ns"], b.get("total_ci95_ns"))


def conclusion(rows: Sequence[dict[str, Any]], cfg: Any, *, plots: Sequence[Path] = (),
               run_dir: Path | None = None) -> str:
    """Plain-text conclusion of a sweep (``cfg``: its :class:`SweepConfig`)."""
    if not rows:
        return "No rows."
    plats = list(dict.fromkeys(r["platform"] for r in rows))
    n = 150 if any(r["experts"] == 150 for r in rows) else max(r["experts"] for r in rows)
    combos = sorted({(r["batch"], r["tokens"]) for r in rows}, key=lambda c: (-c[0], c[1]))
    by = {(r["platform"], r["experts"], r["batch"], r["tokens"]): r for r in rows}
    n_seeds = getattr(cfg, "n_seeds", 1)
    draws = (f"seeds {cfg.seed}..{cfg.seed + n_seeds - 1} (mean ± 95 % CI, Student t over {n_seeds} draws)"
             if n_seeds > 1 else f"seed {cfg.seed} (one draw: no confidence interval)")
    lines = [f"Conclusion: {cfg.model} experts, prompt {cfg.prompt_len} tokens, workload {cfg.workload}, "
             f"cache policy {cfg.policy}, {draws}, {cfg.n_batches} batch{'es' if cfg.n_batches > 1 else ''} "
             f"per row; "
             f"every row starts from a power-cycled node."]
    base = plats[0]
    for b, t in combos:
        cells, speed = [], []
        for p in plats:
            r = by.get((p, n, b, t))
            if r is None:
                continue
            cells.append(f"{p} {'out of memory' if r['oom'] else _pm(r)}")
            rb = by.get((base, n, b, t))
            if p != base and rb is not None and not r["oom"] and not rb["oom"] and rb["total_ns"] > 0:
                speed.append(f"{r['total_ns'] / rb['total_ns']:.1f}x over {p}"
                             + (" (within the 95 % CI: may be noise)" if _noise(r, rb) else ""))
        if cells:
            line = f"- {n} experts, batch {b}, {t} output tokens: " + ", ".join(cells)
            if speed:
                line += f"; {base} speedup " + ", ".join(speed)
            lines.append(line)
    b0, t0 = combos[0]
    hbm = []
    for p in plats:
        prow = [r for r in rows if r["platform"] == p and (r["batch"], r["tokens"]) == (b0, t0)] or \
               [r for r in rows if r["platform"] == p]
        k = prow[0]["experts_in_hbm_at_once"]
        beyond = sorted(r["experts"] for r in prow if r["experts"] > k)
        oom = sorted(r["experts"] for r in prow if r["oom"])
        no_switch = sorted(r["experts"] for r in prow if not r["oom"] and r["switch_ns"] == 0)
        text = f"{p}: {k} experts fit in HBM at once"
        if no_switch:
            text += f"; no expert switching up to {no_switch[-1]} experts"
        elif len(oom) < len(prow):
            text += "; its HBM cache starts cold, so it switches experts in at every size"
        text += f"; compositions of {beyond[0]}+ experts leave HBM" if beyond else "; every swept composition fits"
        if oom:
            text += f"; out of memory from {oom[0]} experts"
        hbm.append(text)
    trend = _trends(rows, plats, b0, t0)
    if trend:
        lines.append(f"- trend or noise (batch {b0}, {t0} output tokens, two largest compositions):")
        lines += [f"  - {x}" for x in trend]
    lines.append(f"- where each platform leaves HBM (batch {b0}, {t0} output tokens):")
    lines += [f"  - {h}" for h in hbm]
    if run_dir is not None:
        lines.append(f"- run directory: {run_dir}/ (results.csv with every row, summary.md, config.json)")
    if plots:
        lines.append("- plots: " + ", ".join(str(p.name if run_dir is not None and p.parent == run_dir else p)
                                              for p in plots))
    return "\n".join(lines)


def _trends(rows: Sequence[dict[str, Any]], plats: list[str], b: int, t: int) -> list[str]:
    """Per platform: does latency change between the two largest compositions beyond the CIs?"""
    out = []
    for p in plats:
        pr = sorted((r for r in rows if r["platform"] == p and (r["batch"], r["tokens"]) == (b, t)
                     and not r["oom"]), key=lambda r: r["experts"])
        if len(pr) < 2 or pr[-1].get("total_ci95_ns") is None:
            continue
        lo, hi = pr[-2], pr[-1]
        change = "the same" if lo["total_ns"] == hi["total_ns"] else \
            "lower" if hi["total_ns"] < lo["total_ns"] else "higher"
        verdict = ("within the 95 % CIs: may be the prompt draw, not a trend" if _noise(lo, hi) else
                   "beyond the 95 % CIs: more than the prompt draw")
        out.append(f"{p}: {_pm(lo)} at {lo['experts']} experts, {_pm(hi)} at {hi['experts']} "
                   f"({change}; {verdict})")
    return out


def headline_table(rows: Sequence[dict[str, Any]]) -> str:
    """Experts x platform, total / switch ms, at the largest batch and fewest output tokens (README style)."""
    from sn40l_emu.report import table

    if not rows:
        return ""
    b = max(r["batch"] for r in rows)
    t = min(r["tokens"] for r in rows)
    plats = list(dict.fromkeys(r["platform"] for r in rows))
    by = {(r["platform"], r["experts"]): r for r in rows if (r["batch"], r["tokens"]) == (b, t)}
    out = []
    for n in sorted({r["experts"] for r in rows}):
        cell: dict[str, Any] = {"experts": n}
        for p in plats:
            r = by.get((p, n))
            ci = None if r is None else r.get("total_ci95_ns")
            cell[p] = "" if r is None else "OOM" if r["oom"] else \
                f"{r['total_ns'] / 1e6:,.1f}{'' if ci is None else f' ± {ci / 1e6:,.1f}'} / {r['switch_ns'] / 1e6:,.1f}"
        out.append(cell)
    cols = [("experts", "experts")] + [(p, f"{p} total / switch ms") for p in plats]
    seeds = max((int(r.get("seeds") or 1) for r in rows), default=1)
    if seeds > 1:
        cols = [("experts", "experts")] + [(p, f"{p} total ± 95% CI / switch ms") for p in plats]
    what = f", means of {seeds} seeds" if seeds > 1 else ""
    return f"batch {b}, {t} output tokens{what} (every row: results.csv, summary.md)\n" + table(out, cols)
