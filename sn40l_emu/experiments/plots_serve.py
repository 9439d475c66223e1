"""Latency CDF per cache policy for ``coe-serve``: one figure, shared axes, units on both.

With several seeds the curve pools every seed's requests, and the legend's p99 is
the mean over seeds with its 95 % confidence interval."""

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
        ci = r.get("p99_ci95_ns")
        p99 = f"{r['p99_ns'] / 1e6:.0f}" + ("" if ci is None else f" ± {ci / 1e6:.0f}")
        ax.step(lat / 1e6, frac, where="post", label=f"{r['policy']} (p99 {p99} ms)")
    ax.set_xlabel("request latency (ms, virtual time)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    seeds = int(rows[0].get("seeds") or 1)
    pooled = f"\nrequests of {seeds} seeds pooled; p99: mean ± 95 % CI over seeds" if seeds > 1 else ""
    ax.set_title(f"coe-serve latency CDF: {rows[0]['platform']}, {rows[0]['experts']} experts, "
                 f"batch {rows[0]['batch']}{pooled}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
