"""Wall and CPU time of the issue #11 injection example at full size, fast path vs message by message.

The example: sn40l in-process, llama2-7b, 50 experts, batch 8, 20 tokens, 4
batches; link 0->1 at 10 % from 5 ms, socket 3 killed after 16 requests.
The fast path (default) repeats runs that leave the slow link busy (exact
references, engine/reuse.py) and lets traced collectives take the batched path
between timed events; ``FaultDriver.fast = False`` runs message by message as
before. Both give the same report (tests/test_inject_speed.py); this script
checks that too, on the size given to ``--slow-*`` (the slow path takes
minutes at full size, so by default it runs on a smaller workload, and the
fast path is timed on that one as well for a same-run ratio).

    .venv/bin/python bench/inject_wall.py [--slow-tokens 3] [--slow-batches 1] [--backend local]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _run(fast: bool, backend: str, tokens: int, batches: int) -> tuple[dict[str, Any], float, float]:
    from sn40l_emu import Emulator, events
    from sn40l_emu.inject.driver import FaultDriver

    FaultDriver.fast = fast
    w, c = time.perf_counter(), time.process_time()  # wall-clock ok: the benchmark
    try:
        with Emulator(profile="sn40l", backend=backend) as emu:
            emu.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.1), at="5ms")
            emu.schedule(events.KillSocket(3, mode="process"), after_requests=16)
            report = emu.run_coe(experts=50, batch=8, tokens=tokens, batches=batches)
    finally:
        FaultDriver.fast = True
    return report.to_json(), time.perf_counter() - w, time.process_time() - c  # wall-clock ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    parser.add_argument("--slow-tokens", type=int, default=3)
    parser.add_argument("--slow-batches", type=int, default=1)
    parser.add_argument("--json", default=str(RESULTS / "inject_wall.json"))
    args = parser.parse_args()

    full, w_full, c_full = _run(True, args.backend, 20, 4)
    small_fast, w_sf, c_sf = _run(True, args.backend, args.slow_tokens, args.slow_batches)
    small_slow, w_ss, c_ss = _run(False, args.backend, args.slow_tokens, args.slow_batches)
    req = full["requests"]
    out = {
        "host": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "python": platform.python_version()},
        "backend": args.backend,
        "full": {"tokens": 20, "batches": 4, "wall_s": round(w_full, 2), "cpu_s": round(c_full, 2),
                 "requests": req, "accounted": req["submitted"] == req["completed"] + req["failed"]},
        "small": {"tokens": args.slow_tokens, "batches": args.slow_batches,
                  "fast": {"wall_s": round(w_sf, 2), "cpu_s": round(c_sf, 2)},
                  "message_by_message": {"wall_s": round(w_ss, 2), "cpu_s": round(c_ss, 2)},
                  "same_report": small_fast == small_slow,
                  "speedup_wall": round(w_ss / w_sf, 1), "speedup_cpu": round(c_ss / c_sf, 1)},
    }
    print(json.dumps(out, indent=2))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["small"]["same_report"] and out["full"]["accounted"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
