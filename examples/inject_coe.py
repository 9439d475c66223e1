"""Script a fault scenario in Python: a slow link, then a socket killed, during CoE batches.

    python examples/inject_coe.py            # in-process node (exact, no Ray)
    python examples/inject_coe.py ray        # one Ray actor per socket

Small sizes (the tiny model) so that it runs in seconds; the same calls take
``model="llama2-7b", experts=50, batch=8, tokens=20`` for the paper's setting.
"""

from __future__ import annotations

import sys

from sn40l_emu import events
from sn40l_emu.inject import InjectionPlan


def main(backend: str = "local") -> int:
    plan = InjectionPlan(profile="sn40l", backend=backend)
    plan.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.1), at="50us")
    plan.schedule(events.KillSocket(3, mode="virtual"), after_requests=4)
    report = plan.run_coe(model="tiny-llama", experts=6, batch=2, tokens=2, prompt_len=4, batches=4,
                          workload="uniform")
    for e in report.events:
        print(f"{e.label}: applied at {e.applied_at_ns} ns, recovery {e.recovery_ns} ns, retried {e.retried}")
    print(f"requests: submitted {report.submitted}, completed {report.completed}, failed {report.failed}")
    return 0 if report.submitted == report.completed + report.failed else 1


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("backend", nargs="?", default="local", choices=("local", "ray"))
    p.add_argument("--quick", action="store_true", help="accepted like every example's (this one is already small)")
    p.add_argument("--out", default=None, help="accepted like every example's (this one draws no figure)")
    sys.exit(main(p.parse_args().backend))
