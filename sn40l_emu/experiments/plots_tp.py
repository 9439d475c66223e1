"""Picture of a TP-scaling run: latency per token vs TP per mode, and where the time goes.

One PNG, one column per phase present in the rows:

* top: latency per token vs TP degree, one line per mode, on a log axis whose
  unit (us or ms) is chosen per phase so that the tick labels are plain numbers;
* bottom: the critical-path breakdown of each (TP, mode) point as stacked bars in
  the same unit, the modes side by side within each TP group and named under
  their bars (never written over them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sn40l_emu.experiments.rows import ROW_BREAKDOWN_KEYS, per_token_ns

_MODE_SHORT = {"unfused": "U", "fused-so": "SO", "fused-ho": "HO", "gpu": "GPU"}

_MODE_STYLE = {
    "unfused": ("#1f77b4", "o"),
    "fused-so": ("#ff7f0e", "s"),
    "fused-ho": ("#d62728", "^"),
    "gpu": ("#2ca02c", "D"),
}
_TERM_COLORS = {
    "compute": "#4c72b0", "weights": "#dd8452", "kv": "#55a868",
    "collectives": "#c44e52", "launch": "#8172b3", "host": "#da8bc3", "other": "#937860",
}
_PHASE_UNIT = {"prefill": "per prompt token", "decode": "per decode step", "generate": "per output token"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unit(values_ns: list[float]) -> tuple[str, float]:
    """(name, ns per unit): us when every value is below 1 ms, else ms."""
    return ("us", 1e3) if values_ns and max(values_ns) < 1e6 else ("ms", 1e6)


def plot_scaling(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``tp_scaling_<model>_<platform>.png`` in ``out_dir``; returns its path."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    phases = [p for p in ("prefill", "decode", "generate") if any(r["phase"] == p for r in rows)]
    modes = [m for m in _MODE_STYLE if any(r["mode"] == m for r in rows)]
    tps = sorted({r["tp"] for r in rows})
    fig, axes = plt.subplots(2, len(phases), figsize=(5.6 * len(phases), 8.2), squeeze=False,
                             layout="constrained")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    for col, phase in enumerate(phases):
        ax, bars = axes[0][col], axes[1][col]
        unit, per = _unit([per_token_ns(r) for r in rows if r["phase"] == phase])
        for mode in modes:
            pts = sorted((r for r in rows if r["phase"] == phase and r["mode"] == mode), key=lambda r: r["tp"])
            color, marker = _MODE_STYLE[mode]
            ax.plot([r["tp"] for r in pts], [per_token_ns(r) / per for r in pts], marker=marker,
                    color=color, label=mode)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(tps, [str(t) for t in tps])
        ax.set_xlabel("TP degree (sockets)")
        ax.set_ylabel(f"latency {_PHASE_UNIT[phase]} ({unit}, log scale)")
        ax.set_title(f"{phase}: latency {_PHASE_UNIT[phase]} vs TP")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)

        width = 0.8 / max(1, len(modes))
        labels_done: set[str] = set()
        ticks: list[float] = []
        tick_labels: list[str] = []
        for i, tp in enumerate(tps):
            for j, mode in enumerate(modes):
                match = [r for r in rows if r["phase"] == phase and r["mode"] == mode and r["tp"] == tp]
                if not match:
                    continue
                r = match[0]
                scale = per_token_ns(r) / r["latency_ns"] / per if r["latency_ns"] else 0.0
                x = i - 0.4 + width * (j + 0.5)
                bottom = 0.0
                for term in ROW_BREAKDOWN_KEYS:
                    h = r["breakdown_ns"][term] * scale
                    if h <= 0:
                        continue
                    bars.bar(x, h, width * 0.9, bottom=bottom, color=_TERM_COLORS[term],
                             label=term if term not in labels_done else None)
                    labels_done.add(term)
                    bottom += h
                ticks.append(x)
                tick_labels.append(_MODE_SHORT.get(mode, mode))
        bars.set_xticks(ticks, tick_labels, fontsize=7)
        bars.tick_params(axis="x", length=0)
        for i, tp in enumerate(tps):
            bars.annotate(f"TP{tp}", xy=(i, 0), xycoords=("data", "axes fraction"), xytext=(0, -16),
                          textcoords="offset points", ha="center", va="top", fontsize=9)
        bars.set_xlabel(" ", labelpad=10)  # room for the TP group names under the mode names
        bars.set_ylabel(f"{unit} {_PHASE_UNIT[phase]}")
        bars.set_title(f"{phase}: critical-path breakdown ({unit} {_PHASE_UNIT[phase]})")
        bars.grid(alpha=0.3, axis="y")
        bars.legend(fontsize=7)
    fig.supxlabel("bars per TP degree: " + ", ".join(f"{_MODE_SHORT.get(m, m)} = {m}" for m in modes), fontsize=9)
    first = rows[0]
    fig.suptitle(f"TP scaling of {first['model']} on {first['platform']}: batch {first['batch']}, "
                 f"prompt {first['prompt_len']} tokens", fontsize=11)
    path = out_dir / f"tp_scaling_{first['model']}_{first['platform']}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
