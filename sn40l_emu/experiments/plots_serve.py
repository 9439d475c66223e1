"""Latency CDF per cache policy for ``coe-serve``: one figure, shared axes, units on both."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_latency_cdf(rows: list[dict[str, Any]], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sn40l_emu.coe.serving_metrics import latency_cdf

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        lat, frac = latency_cdf(r["records"])
        ax.step(lat / 1e6, frac, where="post", label=f"{r['policy']} (p99 {r['p99_ns'] / 1e6:.0f} ms)")
    ax.set_xlabel("request latency (ms, virtual time)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"coe-serve latency CDF: {rows[0]['platform']}, {rows[0]['experts']} experts, "
                 f"batch {rows[0]['batch']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
