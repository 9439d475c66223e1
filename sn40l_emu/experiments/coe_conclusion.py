"""The conclusion a CoE sweep ends with: a few sentences a researcher can quote.

Read off the rows, nothing recomputed: each platform's latency at the largest
swept composition (150 experts in the paper's sweep), the speedup of the first
platform over the others, how many experts each platform holds in HBM at once
(a larger composition leaves HBM: its experts are switched in from DDR or host memory), where a
platform runs out of memory, and where the plots and the run directory are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:,.1f} ms" if ms >= 1 else f"{ms:,.3f} ms"


def conclusion(rows: Sequence[dict[str, Any]], cfg: Any, *, plots: Sequence[Path] = (),
               run_dir: Path | None = None) -> str:
    """Plain-text conclusion of a sweep (``cfg``: its :class:`SweepConfig`)."""
    if not rows:
        return "No rows."
    plats = list(dict.fromkeys(r["platform"] for r in rows))
    n = 150 if any(r["experts"] == 150 for r in rows) else max(r["experts"] for r in rows)
    combos = sorted({(r["batch"], r["tokens"]) for r in rows}, key=lambda c: (-c[0], c[1]))
    by = {(r["platform"], r["experts"], r["batch"], r["tokens"]): r for r in rows}
    lines = [f"Conclusion: {cfg.model} experts, prompt {cfg.prompt_len} tokens, workload {cfg.workload}, "
             f"cache policy {cfg.policy}, seed {cfg.seed}, {cfg.n_batches} batch{'es' if cfg.n_batches > 1 else ''} "
             f"per row; "
             f"every row starts from a power-cycled node."]
    base = plats[0]
    for b, t in combos:
        cells, speed = [], []
        for p in plats:
            r = by.get((p, n, b, t))
            if r is None:
                continue
            cells.append(f"{p} {'out of memory' if r['oom'] else _ms(r['total_ns'])}")
            rb = by.get((base, n, b, t))
            if p != base and rb is not None and not r["oom"] and not rb["oom"] and rb["total_ns"] > 0:
                speed.append(f"{r['total_ns'] / rb['total_ns']:.1f}x over {p}")
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
    lines.append(f"- where each platform leaves HBM (batch {b0}, {t0} output tokens):")
    lines += [f"  - {h}" for h in hbm]
    if run_dir is not None:
        lines.append(f"- run directory: {run_dir}/ (results.csv with every row, summary.md, config.json)")
    if plots:
        lines.append("- plots: " + ", ".join(str(p.name if run_dir is not None and p.parent == run_dir else p)
                                              for p in plots))
    return "\n".join(lines)


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
            cell[p] = "" if r is None else "OOM" if r["oom"] else \
                f"{r['total_ns'] / 1e6:,.1f} / {r['switch_ns'] / 1e6:,.1f}"
        out.append(cell)
    cols = [("experts", "experts")] + [(p, f"{p} total / switch ms") for p in plats]
    return f"batch {b}, {t} output tokens (every row: results.csv, summary.md)\n" + table(out, cols)
