"""Ring all-reduce: emulated time vs chunks per segment (K), for a large and a mid-size buffer.

Runs ``sn40l-emu allreduce-bench``'s code path (timing only, in-process node,
8 sockets, the sn40l profile) for every K, so the numbers are the emulator's,
not the closed form's. Why a curve: with K chunks per ring segment, chunk k
of step s leaves as soon as chunk k of step s-1 has arrived, so more chunks
hide the per-step link latency (1 us) -- but every chunk also occupies the
link for the per-chunk overhead (100 ns), so past a few chunks the time grows
again: (2(n-1)) x K x 100 ns of overhead.

Prints a markdown table, writes ``bench/results/ring_chunks.json`` and the plot
``bench/results/ring_chunks.png``.

    .venv/bin/python bench/ring_chunks.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"1 GiB": 1 << 30, "1 MiB": 1 << 20}
KS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
LINK_GBPS = 50


def main() -> int:
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.allreduce_bench import BenchConfig, run_bench
    from sn40l_emu.program import Algo

    profile = load_profile("sn40l")
    node = LocalNode(profile, trace=False)
    curve: dict[str, list[dict[str, float]]] = {}
    for label, size in SIZES.items():
        curve[label] = []
        for k in KS:
            cfg = BenchConfig(size, size, 2, Algo.RING, k, 8, "bfloat16", check=False, timing_only=True,
                              iters=1, warmup=0)
            (row,) = list(run_bench(node, cfg))
            curve[label].append({"chunks": k, "time_us": row.time_us, "busbw_gbps": row.busbw_gbps})
    node.close()

    heads = " | ".join(f"{lbl} time (us) | {lbl} busbw (GB/s)" for lbl in SIZES)
    print(f"| K | {heads} |")
    print("|---:|" + "---:|" * (2 * len(SIZES)))
    best = {lbl: min(pts, key=lambda p: p["time_us"])["chunks"] for lbl, pts in curve.items()}
    for i, k in enumerate(KS):
        cells = []
        for lbl in SIZES:
            p = curve[lbl][i]
            mark = " *" if best[lbl] == k else ""
            cells.append(f"{p['time_us']:.2f}{mark} | {p['busbw_gbps']:.2f}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"(* fastest K; 8 sockets, ring, full mesh, {LINK_GBPS} GB/s links, 1 us latency, 100 ns per chunk)")
    gib = {p["chunks"]: p["busbw_gbps"] for p in curve["1 GiB"]}
    print(f"1 GiB timing-only ring busbw: K=2 {gib[2]:.2f} GB/s ({gib[2] / LINK_GBPS:.1%} of the link), "
          f"K=8 {gib[8]:.2f}, K=64 {gib[64]:.2f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ring_chunks.json").write_text(json.dumps({"sizes": SIZES, "curve": curve}, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIZES), figsize=(10, 3.8))
    for ax, (lbl, pts) in zip(axes, curve.items(), strict=True):
        ax.plot([p["chunks"] for p in pts], [p["time_us"] for p in pts], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chunks per ring segment (K)")
        ax.set_ylabel("emulated time (us)")
        ax.set_title(f"ring all-reduce, {lbl}, 8 sockets")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "ring_chunks.png", dpi=120)
    print(f"wrote {RESULTS / 'ring_chunks.json'} and {RESULTS / 'ring_chunks.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
