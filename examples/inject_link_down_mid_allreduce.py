"""A link that fails in the middle of a ring all-reduce, scripted in Python.

    python examples/inject_link_down_mid_allreduce.py [ray]

On a ring fabric, link 3 <-> 4 goes down at 3.5 ms, inside the second 64 MiB
all-reduce: every socket's all-reduce stops at exactly 3.5 ms, the ring is
re-formed around the link, and the all-reduce is retried.
"""

from __future__ import annotations

import sys

from sn40l_emu import events
from sn40l_emu.inject import InjectionPlan


def main(backend: str = "local") -> int:
    plan = InjectionPlan(profile="sn40l", backend=backend, overrides=("p2p.topology=ring",))
    plan.schedule(events.LinkDown(src=3, dst=4), at="3.5ms")
    report = plan.run_allreduce(size_bytes="64 MiB", repeats=4, algo="ring", chunks=8)
    stops = sorted({e.start_ns + e.dur_ns for e in report.trace if e.name.endswith("(failed)")})
    print(f"the failed all-reduce stopped at {stops} ns on every socket")
    for row in report.rows:
        print(f"all-reduce {row['repeat']}: {row['status']} after {row['attempts']} attempt(s), "
              f"{row.get('time_ns', 0) / 1e6:.3f} ms")
    print(f"requests: submitted {report.submitted}, completed {report.completed}, failed {report.failed}")
    return 0 if report.submitted == report.completed + report.failed and stops == [3_500_000] else 1


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("backend", nargs="?", default="local", choices=("local", "ray"))
    p.add_argument("--quick", action="store_true", help="accepted like every example's (this one is already small)")
    p.add_argument("--out", default=None, help="accepted like every example's (this one draws no figure)")
    sys.exit(main(p.parse_args().backend))
