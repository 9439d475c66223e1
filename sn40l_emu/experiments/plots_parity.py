"""Parity plot of ``sn40l-emu validate``: predicted vs measured, one panel per quantity.

Log-log axes, the line y = x with ±10 % and ±25 % bands, one colour per
platform; filled markers are validation cases, hollow ones calibration cases
(so nobody mistakes a fitted point for a prediction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PLATFORM_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3}  # latencies share one panel, in ms


def _ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks inside [lo, hi] (a log axis spanning less than a decade gets labels too)."""
    import math

    out = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10.0**k for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    return out


def _points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that ran, with times in ms and a panel label per quantity."""
    out = []
    for r in rows:
        if r.get("got") is None:
            continue
        scale = _TO_MS.get(r["unit"], 1.0)
        label = "latency (ms)" if r["unit"] in _TO_MS else r["unit"]
        out.append({**r, "panel": label, "got": r["got"] * scale, "want": r["want"] * scale})
    return out


def plot_parity(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``validate_parity.png`` in ``out_dir``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    done = _points(rows)
    unit_list = sorted({r["panel"] for r in done}) or ["-"]
    platforms = sorted({r["platform"] for r in done})
    color = {p: _PLATFORM_COLORS[i % len(_PLATFORM_COLORS)] for i, p in enumerate(platforms)}
    fig, axes = plt.subplots(1, len(unit_list), figsize=(5.2 * len(unit_list), 5.0), squeeze=False)
    for ax, unit in zip(axes[0], unit_list, strict=True):
        pts = [r for r in done if r["panel"] == unit]
        vals = [v for r in pts for v in (r["got"], r["want"])] or [1.0]
        lo, hi = min(vals) / 1.6, max(vals) * 1.6
        xs = np.geomspace(lo, hi, 50)
        ax.fill_between(xs, xs * 0.75, xs * 1.25, color="0.92", label="±25 %")
        ax.fill_between(xs, xs * 0.90, xs * 1.10, color="0.80", label="±10 %")
        ax.plot(xs, xs, color="0.3", lw=1, label="y = x")
        for p in platforms:
            for role, face in (("validation", None), ("calibration", "none")):
                sel = [r for r in pts if r["platform"] == p and r["role"] == role]
                if sel:
                    ax.scatter([r["want"] for r in sel], [r["got"] for r in sel], s=42, zorder=3,
                               edgecolors=color[p], facecolors=face or color[p], label=f"{p} ({role})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(FixedLocator(_ticks(lo, hi)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"measured, {unit}")
        ax.set_ylabel(f"emulated, {unit}")
        ax.set_title(unit)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("sn40l-emu validate: emulated vs published (hollow = calibration, filled = validation)",
                 fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "validate_parity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
