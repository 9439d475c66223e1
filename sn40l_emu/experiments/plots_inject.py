"""Picture of an injection run: latency per batch (or per all-reduce), the events, the recovery.

Batches are whole numbers from 0, so the x axis has integer ticks from 0; the y
axis starts at 0 so that a slow-down reads as a ratio. An event is drawn where it
fired (between two batches). A recovery (a socket recreated and its state
reloaded from the host) is not part of any batch's latency, so it is drawn as its
own hatched bar on top of the batch that waited for it, with its length written
on it: the picture shows what the request-level table says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def inject_timeline(report: Any, out_dir: Path, name: str = "inject_timeline.png") -> Path:
    """Write the timeline PNG of a :class:`~sn40l_emu.inject.runner.RunReport`; returns its path."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    rows = list(report.rows)
    # a batch that lost requests to a fault is "partial"; serving rows carry no status
    done = [r for r in rows if r.get("status", "completed") == "completed" and not r.get("failed_requests")]
    key = "total_ns" if any("total_ns" in r for r in done) else "time_ns"
    xkey = next((k for k in ("batch", "repeat", "generation") if rows and k in rows[0]), "repeat")
    per = max(1, len(done[0].get("requests", []))) if done and key == "total_ns" else 1
    fig, ax = plt.subplots(figsize=(8.5, 4.6), layout="constrained")
    xs = [int(r[xkey]) for r in done]
    ys = [r[key] / 1e6 for r in done]
    ax.bar(xs, ys, width=0.7, color="#1f77b4", label="latency of the batch (ms)" if xkey == "batch" else "latency (ms)")
    failed = [int(r[xkey]) for r in rows if r.get("status") in ("failed", "partial") or r.get("failed_requests")]
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="red", ms=10, mew=2, label="failed")
    top = max(ys, default=1.0)
    for i, e in enumerate(report.events):
        if e.requests_done_at_apply is None:
            continue
        at = e.requests_done_at_apply // per  # the first batch that ran after the event
        ax.axvline(at - 0.5, color="red", ls="--", lw=1)
        ax.annotate(e.kind, xy=(at - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -4 - 12 * i),
                    textcoords="offset points", fontsize=8, color="red", va="top", ha="left")
        if e.recovery_ns > 0:
            base = next((r[key] / 1e6 for r in done if int(r[xkey]) == at), 0.0)
            rec_ms = e.recovery_ns / 1e6
            ax.bar([at], [rec_ms], bottom=[base], width=0.7, color="#ff7f0e", hatch="//", edgecolor="white",
                   label="recovery: sockets recreated, state reloaded (ms)")
            ax.annotate(f"recovery {rec_ms:,.0f} ms", xy=(at, base + rec_ms), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
            top = max(top, base + rec_ms)
    n = max([*xs, *failed], default=0) + 1
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, top * 1.18)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    what = {"batch": "batch", "repeat": "all-reduce", "generation": "generation"}[xkey]
    ax.set_xlabel(f"{what} (in order of submission)")
    ax.set_ylabel(f"virtual time per {what} (ms)")
    ax.set_title(f"{report.scenario}: latency per {what}, events and recovery", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper right")
    p = out_dir / name
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
