"""Pictures of the CoE sweep: latency vs experts per (batch, tokens), stacked breakdowns.

What the pictures must not suggest (docs/model.md §4, §5):

* The SN40L keeps *every* expert in DDR; its HBM is a cache that starts cold at the
  start of every row (only the router and the KV reservation are there). Its cache
  size is stated, never drawn as "experts fit in HBM".
* A DGX keeps the whole composition in GPU HBM while it fits (up to N experts, no
  switching at all) and in host DRAM beyond: a cliff between N and N+1. The line
  is broken there (filled markers: in GPU HBM; open markers: in host DRAM) and the
  cliff is marked.
* Compared charts share their scales. Where rows carry a 95 % confidence interval
  (``total_ci95_ns`` and friends) it is drawn as error bars.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

_COLORS = {"sn40l": "#d62728", "dgx-a100": "#1f77b4", "dgx-h100": "#2ca02c"}
_PHASES = (("router_ns", "router", "#9467bd"), ("switch_ns", "switch (expert copies)", "#ff7f0e"),
           ("program_load_ns", "Program Load (host)", "#8c564b"),
           ("argument_load_ns", "Argument Load (host)", "#e377c2"),
           ("host_ns", "host runtime (admit, per step, per token)", "#7f7f7f"),
           ("expert_ns", "experts (prefill + decode)", "#17becf"))


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(platform: str) -> str | None:
    return _COLORS.get(platform)


def is_gpu(platform: str) -> bool:
    """Whether a row's platform is a GPU baseline (experts in GPU HBM while they fit)."""
    from sn40l_emu.config import Platform, load_profile
    from sn40l_emu.errors import EmuError

    try:
        return load_profile(platform).platform is Platform.GPU
    except (EmuError, OSError, ValueError):
        return platform.startswith("dgx")


def _ms(ns: float) -> float:
    return ns / 1e6


def _ci_ms(row: dict[str, Any], key: str) -> float | None:
    """The 95 % CI half-width of ``key`` in ms, when the row carries one."""
    ci = row.get(key.replace("_ns", "_ci95_ns"))
    return None if ci is None else _ms(float(ci))


def _seeds_note(rows: list[dict[str, Any]]) -> str:
    """What a point is: the mean over n seeds with its 95 % CI as error bars (nothing for one draw)."""
    n = max((int(r.get("seeds") or 1) for r in rows), default=1)
    return f"\nmean of {n} seeds, bars: 95 % CI" if n > 1 else ""


def hbm_edge(rows: list[dict[str, Any]]) -> int | None:
    """The largest composition a GPU platform keeps in HBM (None if the row does not say)."""
    vals = [int(r["experts_in_hbm_at_once"]) for r in rows if r.get("experts_in_hbm_at_once") is not None]
    return min(vals) if vals else None


def start_state(rows: list[dict[str, Any]]) -> str:
    """One sentence per platform kind: where experts start and what HBM holds."""
    parts = []
    plats = sorted({r["platform"] for r in rows})
    sn = [p for p in plats if not is_gpu(p)]
    gpu = [p for p in plats if is_gpu(p)]
    if sn:
        slots = hbm_edge([r for r in rows if r["platform"] in sn])
        parts.append(f"{', '.join(sn)}: every expert in DDR; HBM cache of {slots} experts, cold at the start")
    if gpu:
        edge = hbm_edge([r for r in rows if r["platform"] in gpu])
        parts.append(f"{', '.join(gpu)}: all experts preloaded in GPU HBM up to {edge}, "
                     "beyond that in host DRAM with a cold HBM cache")
    return "; ".join(parts)


def latency_vs_experts(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per (batch, tokens): a line per platform, broken where a DGX leaves HBM; OOM as x."""
    plt = _plt()
    paths = []
    groups: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["batch"], r["tokens"])].append(r)
    for (batch, tokens), rs in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
        ok_rows = [r for r in rs if not r["oom"]]
        top = max((_ms(r["total_ns"] + (r.get("total_ci95_ns") or 0)) for r in ok_rows), default=1.0)
        xmax = max(r["experts"] for r in rs)
        edges: dict[int, list[str]] = {}
        for plat in sorted({r["platform"] for r in rs}):
            pts = sorted((r for r in rs if r["platform"] == plat), key=lambda r: r["experts"])
            ok = [r for r in pts if not r["oom"]]
            color = _color(plat)
            if is_gpu(plat):
                edge = hbm_edge(pts)
                segs = [([r for r in ok if edge is None or r["experts"] <= edge], "o", "full",
                         f"{plat} (experts in GPU HBM)"),
                        ([r for r in ok if edge is not None and r["experts"] > edge], "o", "none",
                         f"{plat} (experts in host DRAM)")]
                if edge is not None and edge < xmax:
                    edges.setdefault(edge, []).append(plat)
            else:
                segs = [(ok, "s", "full", f"{plat} (experts in DDR, HBM cache)")]
            for seg, marker, fill, label in segs:
                if not seg:
                    continue
                xs = [r["experts"] for r in seg]
                ys = [_ms(r["total_ns"]) for r in seg]
                errs = [_ci_ms(r, "total_ns") for r in seg]
                yerr = [e or 0.0 for e in errs] if any(e is not None for e in errs) else None
                ax.errorbar(xs, ys, yerr=yerr, marker=marker, fillstyle=fill, ms=7, lw=1.8, capsize=3,
                            color=color, label=label)
            oom = [r for r in pts if r["oom"]]
            if oom:
                ax.plot([r["experts"] for r in oom], [top * 1.12] * len(oom), "x", ms=10, mew=2,
                        color=color, label=f"{plat}: out of memory")
        for edge, plats in sorted(edges.items()):
            ax.axvspan(edge, edge + 1, color="0.5", alpha=0.25, lw=0)
            ax.axvline(edge + 0.5, color="0.3", ls="--", lw=1)
            ax.annotate(f"{' and '.join(plats)} leave GPU HBM:\n> {edge} experts live in host DRAM",
                        xy=(edge + 0.5, top * 1.2), xytext=(6, 0), textcoords="offset points",
                        fontsize=8.5, va="top", ha="left", color="0.2",
                        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.9})
        ax.set_ylim(0, top * 1.25)
        ax.set_xlim(0, xmax * 1.03 + 1)
        ax.set_xlabel("experts in the composition")
        ax.set_ylabel("batch latency (ms)" + _seeds_note(rs))
        ax.set_title(f"CoE batch latency vs experts: batch {batch}, {tokens} output tokens per prompt",
                     fontsize=11)
        ax.text(0.0, -0.13, "HBM at the start of each point: " + start_state(rs) + ".", transform=ax.transAxes,
                fontsize=7.5, va="top", ha="left", wrap=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
        p = out_dir / f"coe_latency_b{batch}_t{tokens}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def _stack(ax: Any, rs: list[dict[str, Any]], labels: list[str], legend: bool) -> None:
    bottom = [0.0] * len(rs)
    for key, name, color in _PHASES:
        vals = [_ms(r.get(key, 0)) for r in rs]  # runs from before the load phases lack them
        ax.bar(labels, vals, bottom=bottom, label=name if legend else None, color=color)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    errs = [_ci_ms(r, "total_ns") for r in rs]
    for i, (total, err) in enumerate(zip(bottom, errs, strict=True)):
        ax.annotate(f"{total:,.0f}", xy=(i, total + (err or 0.0)), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)
    if any(e is not None for e in errs):
        ax.errorbar(labels, bottom, yerr=[e or 0.0 for e in errs], fmt="none", ecolor="black", capsize=4,
                    label="95 % CI of the total" if legend else None)


def breakdown_per_platform(rows: list[dict[str, Any]], out_dir: Path, batch: int, tokens: int) -> list[Path]:
    """Stacked router / switch / expert bars per expert count: one PNG per platform and one with all
    platforms side by side, every chart on the same y-scale so they can be compared."""
    plt = _plt()
    paths: list[Path] = []
    sel = [r for r in rows if r["batch"] == batch and r["tokens"] == tokens and not r["oom"]]
    plats = sorted({r["platform"] for r in sel})
    if not plats:
        return paths
    ymax = max(_ms(r["total_ns"] + (r.get("total_ci95_ns") or 0)) for r in sel) * 1.08
    note = "HBM at the start of each bar: " + start_state(sel) + "."
    per_plat = {p: sorted((r for r in sel if r["platform"] == p), key=lambda r: r["experts"]) for p in plats}

    for plat, rs in per_plat.items():
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        _stack(ax, rs, [str(r["experts"]) for r in rs], legend=True)
        ax.set_ylim(0, ymax)
        ax.set_xlabel("experts in the composition")
        ax.set_ylabel("time per batch (ms)" + _seeds_note(rs))
        ax.set_title(f"{plat}: where the batch time goes (batch {batch}, {tokens} tokens)\n"
                     f"y-scale shared with the other platforms' charts", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
        p = out_dir / f"coe_breakdown_{plat}_b{batch}_t{tokens}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    fig, axes = plt.subplots(1, len(plats), figsize=(4.6 * len(plats), 4.8), sharey=True, squeeze=False,
                             layout="constrained")
    for i, (plat, rs) in enumerate(per_plat.items()):
        ax = axes[0][i]
        _stack(ax, rs, [str(r["experts"]) for r in rs], legend=i == 0)
        ax.set_title(plat, fontsize=10)
        ax.set_xlabel("experts in the composition")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylim(0, ymax)
    axes[0][0].set_ylabel("time per batch (ms)" + _seeds_note(sel))
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Where the CoE batch time goes: batch {batch}, {tokens} output tokens per prompt "
                 "(one y-scale)", fontsize=11)
    fig.text(0.01, 0.0, note, fontsize=7.5, ha="left", va="bottom", wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    p = out_dir / f"coe_breakdown_b{batch}_t{tokens}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
