"""Pictures of the CoE sweep: latency vs experts per (batch, tokens), stacked breakdowns."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

_COLORS = {"sn40l": "#d62728", "dgx-a100": "#1f77b4", "dgx-h100": "#2ca02c"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_experts(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per (batch, tokens): a line per platform, OOM marked with an x at the top."""
    plt = _plt()
    paths = []
    groups: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["batch"], r["tokens"])].append(r)
    for (batch, tokens), rs in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        top = max((r["total_ns"] for r in rs if not r["oom"]), default=1) / 1e6
        marks: dict[int, list[str]] = {}
        for plat in sorted({r["platform"] for r in rs}):
            pts = sorted((r for r in rs if r["platform"] == plat), key=lambda r: r["experts"])
            ok = [r for r in pts if not r["oom"]]
            ax.plot([r["experts"] for r in ok], [r["total_ns"] / 1e6 for r in ok], "o-",
                    label=plat, color=_COLORS.get(plat))
            oom = [r for r in pts if r["oom"]]
            if oom:
                ax.plot([r["experts"] for r in oom], [top * 1.08] * len(oom), "x", ms=10,
                        color=_COLORS.get(plat), label=f"{plat}: out of memory")
            slots = pts[0].get("experts_in_hbm_at_once") if pts else None
            if slots and slots < max(r["experts"] for r in rs):
                marks.setdefault(slots, []).append(plat)
        for slots, plats in sorted(marks.items()):
            # where the composition stops fitting in HBM (SN40L: where its HBM cache starts evicting)
            ax.axvline(slots + 0.5, color=_COLORS.get(plats[0]), ls=":", alpha=0.7)
            ax.text(slots + 0.5, top * 0.5, f" {', '.join(plats)}: {slots} experts fit in HBM", rotation=90,
                    fontsize=7, color=_COLORS.get(plats[0]), va="center")
        ax.set_xlabel("experts in the composition")
        ax.set_ylabel("batch latency (ms)")
        ax.set_title(f"CoE batch latency: batch {batch}, {tokens} output tokens per prompt")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.subplots_adjust(bottom=0.13, top=0.9, left=0.1, right=0.97)
        p = out_dir / f"coe_latency_b{batch}_t{tokens}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def breakdown_per_platform(rows: list[dict[str, Any]], out_dir: Path, batch: int, tokens: int) -> list[Path]:
    """Stacked router / switch / expert bars per expert count, one PNG per platform."""
    plt = _plt()
    paths = []
    sel = [r for r in rows if r["batch"] == batch and r["tokens"] == tokens and not r["oom"]]
    for plat in sorted({r["platform"] for r in sel}):
        rs = sorted((r for r in sel if r["platform"] == plat), key=lambda r: r["experts"])
        labels = [str(r["experts"]) for r in rs]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        bottom = [0.0] * len(rs)
        for key, color in (("router_ns", "#9467bd"), ("switch_ns", "#ff7f0e"), ("expert_ns", "#17becf")):
            vals = [r[key] / 1e6 for r in rs]
            ax.bar(labels, vals, bottom=bottom, label=key.replace("_ns", ""), color=color)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xlabel("experts in the composition")
        ax.set_ylabel("ms per batch")
        ax.set_title(f"{plat}: where the batch time goes (batch {batch}, {tokens} tokens)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = out_dir / f"coe_breakdown_{plat}_b{batch}_t{tokens}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
