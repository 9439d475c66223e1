"""Picture of a TP-scaling run: latency per token vs TP per mode, and where the time goes.

One PNG, one column per phase present in the rows:

* top: latency per token (ms, log scale) vs TP degree, one line per mode;
* bottom: the critical-path breakdown of each (TP, mode) point as stacked bars,
  in ms per token, the modes side by side within each TP group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sn40l_emu.experiments.rows import ROW_BREAKDOWN_KEYS, per_token_ns

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


def plot_scaling(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``tp_scaling_<model>_<platform>.png`` in ``out_dir``; returns its path."""
    plt = _plt()
    phases = [p for p in ("prefill", "decode", "generate") if any(r["phase"] == p for r in rows)]
    modes = [m for m in _MODE_STYLE if any(r["mode"] == m for r in rows)]
    tps = sorted({r["tp"] for r in rows})
    fig, axes = plt.subplots(2, len(phases), figsize=(5.2 * len(phases), 7.5), squeeze=False)
    for col, phase in enumerate(phases):
        ax, bars = axes[0][col], axes[1][col]
        for mode in modes:
            pts = sorted((r for r in rows if r["phase"] == phase and r["mode"] == mode), key=lambda r: r["tp"])
            color, marker = _MODE_STYLE[mode]
            ax.plot([r["tp"] for r in pts], [per_token_ns(r) / 1e6 for r in pts], marker=marker,
                    color=color, label=mode)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(tps, [str(t) for t in tps])
        ax.set_xlabel("TP degree (sockets)")
        ax.set_ylabel(f"latency {_PHASE_UNIT[phase]} (ms)")
        ax.set_title(phase)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)

        width = 0.8 / max(1, len(modes))
        labels_done: set[str] = set()
        for i, tp in enumerate(tps):
            for j, mode in enumerate(modes):
                match = [r for r in rows if r["phase"] == phase and r["mode"] == mode and r["tp"] == tp]
                if not match:
                    continue
                r = match[0]
                scale = per_token_ns(r) / r["latency_ns"] / 1e6 if r["latency_ns"] else 0.0
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
                bars.text(x, bottom, mode.replace("fused-", "f-")[:6], ha="center", va="bottom",
                          fontsize=6, rotation=90)
        bars.set_xticks(range(len(tps)), [f"TP{t}" for t in tps])
        bars.set_ylabel(f"ms {_PHASE_UNIT[phase]}")
        bars.set_title(f"{phase}: critical-path breakdown")
        bars.grid(alpha=0.3, axis="y")
        bars.legend(fontsize=7)
    first = rows[0]
    fig.suptitle(f"{first['model']} on {first['platform']}: batch {first['batch']}, "
                 f"prompt {first['prompt_len']}", fontsize=11)
    fig.tight_layout()
    path = out_dir / f"tp_scaling_{first['model']}_{first['platform']}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
