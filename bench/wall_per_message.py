"""Wall time per emulated message of a 64-socket ring all-reduce, in-process (target <= 20 us).

A 1 MiB ring all-reduce (bfloat16 in timing mode, and float32 with real data)
over 64 in-process sockets (eight emulated nodes, the profile's P2P fabric),
K = the profile's chunks per segment. One call is 64 x 2(64-1) = 8,064
emulated messages (one frame per ring step per rank). Measured in one run,
interleaved: the batched path (every rank meets at a rendezvous, one numpy
step per ring step; the default in process) and the frame path (each frame
through encode, mailbox and decode: the rendezvous taken away), so the ratio
is a same-run ratio. Both give the same nanoseconds (checked here too).
Wall (perf_counter) and this process's CPU time are both reported: on a
shared, loaded machine the CPU time is what the code costs.

    .venv/bin/python bench/wall_per_message.py [--rounds 5] [--frame-rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frame-rounds", type=int, default=1, help="rounds of the (slow) frame path")
    parser.add_argument("--json", default=str(RESULTS / "wall_per_message.json"))
    args = parser.parse_args()

    import numpy as np

    from sn40l_emu.collectives import all_reduce
    from sn40l_emu.config import load_profile
    from sn40l_emu.p2p.inproc import make_inproc_transports, run_group
    from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
    from sn40l_emu.program import Algo

    params = load_profile("sn40l").p2p.params()
    n = args.sockets
    group = tuple(range(n))
    messages = n * 2 * (n - 1)
    data: dict[str, Tensor] = {"timing (bf16, symbolic)": SymbolicTensor((512 * 1024,), "bfloat16"),
                               "real data (float32)": np.ones(256 * 1024, dtype=np.float32)}

    def once(batched: bool, x: Tensor) -> tuple[float, float, list[int]]:
        transports = make_inproc_transports(group, params)
        if not batched:
            for t in transports.values():
                t.rendezvous = None

        async def body(t: Transport) -> int:
            return (await all_reduce(t, group, x, 0, algo=Algo.RING))[1]

        w, c = time.perf_counter(), time.process_time()  # wall-clock ok: the benchmark
        ends = run_group(group, body, params, transports=transports)
        return time.perf_counter() - w, time.process_time() - c, ends  # wall-clock ok

    samples: dict[str, dict[str, list[float]]] = {}
    ends_seen: dict[str, set[tuple[int, ...]]] = {}
    for label, x in data.items():
        once(True, x)  # warm-up (imports, route memos)
        for path, rounds in (("batched", args.rounds), ("frame", args.frame_rounds)):
            key = f"{label}, {path} path"
            s = samples.setdefault(key, {"wall_s": [], "cpu_s": []})
            for _ in range(rounds):
                w, c, ends = once(path == "batched", x)
                s["wall_s"].append(w)
                s["cpu_s"].append(c)
                ends_seen.setdefault(label, set()).add(tuple(ends))
    out: dict[str, Any] = {
        "sockets": n, "size_bytes": 1 << 20, "messages_per_call": messages,
        "chunks_per_segment": params.default_chunks,
        "host": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                 "python": platform.python_version()},
        "same_ns_on_both_paths": all(len(v) == 1 for v in ends_seen.values()),
        "target_us_per_message": 20.0, "cases": {}}
    print(f"# 1 MiB ring all-reduce, {n} sockets in-process, {messages} messages per call; "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'case':52s} {'wall/call s':>11s} {'us/msg wall':>11s} {'us/msg cpu':>10s}")
    for key, s in samples.items():
        w, c = statistics.median(s["wall_s"]), statistics.median(s["cpu_s"])
        out["cases"][key] = {**s, "median_wall_s": w, "median_cpu_s": c,
                             "us_per_message_wall": w / messages * 1e6, "us_per_message_cpu": c / messages * 1e6}
        print(f"{key:52s} {w:11.3f} {w / messages * 1e6:11.1f} {c / messages * 1e6:10.1f}")
    for label in data:
        b, f = out["cases"][f"{label}, batched path"], out["cases"][f"{label}, frame path"]
        ratio = f["median_cpu_s"] / b["median_cpu_s"]
        out.setdefault("frame_over_batched_cpu", {})[label] = ratio
        print(f"# {label}: frame path / batched path (CPU, same run) = {ratio:.1f}x")
    print(f"# same nanoseconds on both paths: {out['same_ns_on_both_paths']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
