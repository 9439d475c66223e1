"""Same-host P2P data paths by frame size: inline on the Unix socket vs the shared-memory arena.

Two processes, each with the endpoint server and FastTransport a socket actor
holds. Process 0 streams ``--frames`` frames of each size to process 1, which
receives each one and copies it into its own buffer (as a collective that
gathers it would; an arena frame is read straight from shared memory, an
inline one from the private buffer it was received into), then answers with a
small frame. Reported: wall time per frame and GB/s, per path; the crossover
sets ``SHM_MIN_BYTES`` in :mod:`sn40l_emu.p2p.wire.fast_transport`.

    .venv/bin/python bench/p2p_paths.py [--frames 40]

Writes ``bench/results/p2p_paths.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20, 16 << 20]
PATHS = {"inline": None, "shm": 0}  # shm_min_bytes per path


async def _run(rank: int, conn: Connection, frames: int, rounds: int) -> dict[str, Any]:
    import numpy as np

    from sn40l_emu.fabric.network import NetworkView
    from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
    from sn40l_emu.fabric.topology import make_topology
    from sn40l_emu.p2p.wire.endpoint import LocalServer
    from sn40l_emu.p2p.wire.fast_transport import FastTransport, PeerMailbox

    params = P2PParams(TopologyKind.FULL_MESH, LinkParams(50 * 10**9, 1000), 100, 1 << 30, 8, 60.0,
                       LinkParams(25 * 10**9, 5000))
    peer = 1 - rank
    mailbox = PeerMailbox(rank)
    peer_info: dict[str, str] = {}
    server = LocalServer(rank, 2, params.max_frame_bytes, lambda: mailbox, mailbox.fail,
                         lambda src: peer_info.get("dir"))
    await server.start()
    conn.send((server.path, server.dir))
    path, peer_info["dir"] = conn.recv()
    t = FastTransport(rank, {}, mailbox, NetworkView(rank, make_topology(params.topology, 2), params),
                      params.max_frame_bytes, params.timeout_s, {peer: path}, arena_dir=server.dir)
    await t.open()
    small = np.zeros(1, np.int64)
    out: dict[str, Any] = {}
    tag = 0
    for size in SIZES:
        payload = np.ones(size // 4, np.float32)
        sink = np.empty_like(payload)
        for rnd in range(1 + rounds):  # the first round warms memory up; paths alternate
            for name, shm_min in PATHS.items():
                t.arena_dir = server.dir if shm_min is not None else None
                t.shm_min_bytes = shm_min or 0
                tag += 1
                if rank == 0:
                    began = time.perf_counter()
                    for _ in range(frames):
                        await t.send(peer, tag, payload, np.array([0]))
                    await t.recv(peer, tag)
                    wall = time.perf_counter() - began
                    if rnd > 0:
                        out.setdefault(f"{name}/{size}", {"path": name, "size_bytes": size, "us_per_frame": []})
                        out[f"{name}/{size}"]["us_per_frame"].append(1e6 * wall / frames)
                else:
                    for _ in range(frames):
                        got, _ = await t.recv(peer, tag)
                        np.copyto(sink, got)  # type: ignore[arg-type]
                        del got
                    await t.send(peer, tag, small, np.array([0]))
    await t.close()
    server.close()
    return out


def _child(rank: int, conn: Connection, frames: int, rounds: int) -> None:
    out = asyncio.run(_run(rank, conn, frames, rounds))
    conn.send(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per size, path and round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (min and median reported)")
    parser.add_argument("--json", default=str(RESULTS / "p2p_paths.json"))
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    a0, b0 = ctx.Pipe()
    a1, b1 = ctx.Pipe()
    procs = [ctx.Process(target=_child, args=(r, c, args.frames, args.rounds)) for r, c in ((0, b0), (1, b1))]
    for p in procs:
        p.start()
    info0, info1 = a0.recv(), a1.recv()
    a0.send(info1)
    a1.send(info0)
    results = a0.recv()
    a1.recv()
    for p in procs:
        p.join()
    for row in results.values():
        row["min_us"] = min(row["us_per_frame"])
        row["median_us"] = statistics.median(row["us_per_frame"])
        row["gbps_at_min"] = row["size_bytes"] / row["min_us"] / 1e3
    print(f"# same-host frame paths: {args.frames} frames x {args.rounds} rounds per size, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f}; us per frame, min / median over rounds")
    print(f"{'size (B)':>10s} " + " ".join(f"{n + ' min':>12s} {n + ' med':>12s}" for n in PATHS)
          + f" {'shm/inline (min)':>17s}")
    for size in SIZES:
        cells = [results[f"{n}/{size}"] for n in PATHS]
        ratio = cells[1]["min_us"] / cells[0]["min_us"]
        print(f"{size:>10d} " + " ".join(f"{c['min_us']:12.1f} {c['median_us']:12.1f}" for c in cells)
              + f" {ratio:17.2f}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"frames": args.frames, "rows": list(results.values())}, indent=2) + "\n")
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
