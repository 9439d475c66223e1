"""Script a fault scenario in Python: a slow link, then a socket killed, during CoE batches.

    python examples/inject_coe.py            # in-process node (exact, no Ray)
    python examples/inject_coe.py ray        # one Ray actor per socket
    python examples/inject_coe.py --full     # the paper's setting (llama2-7b, 50 experts, batch 8,
                                             # 20 tokens, 4 batches): seconds in-process

By default small sizes (the tiny model); ``--full`` runs the call of issue #11 as written::

    with Emulator(profile="sn40l", backend="local") as emu:
        emu.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.1), at="5ms")
        emu.schedule(events.KillSocket(3, mode="process"), after_requests=16)
        report = emu.run_coe(experts=50, batch=8, tokens=20, batches=4)
"""

from __future__ import annotations

import sys

from sn40l_emu import events
from sn40l_emu.inject import InjectionPlan


def main(backend: str = "local", full: bool = False) -> int:
    plan = InjectionPlan(profile="sn40l", backend=backend)
    if full:
        plan.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.1), at="5ms")
        plan.schedule(events.KillSocket(3, mode="process"), after_requests=16)
        report = plan.run_coe(experts=50, batch=8, tokens=20, batches=4)
    else:
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
    p.add_argument("--full", action="store_true", help="the paper's setting (llama2-7b, 50 experts, batch 8)")
    p.add_argument("--quick", action="store_true", help="accepted like every example's (the default is small)")
    p.add_argument("--out", default=None, help="accepted like every example's (this one draws no figure)")
    a = p.parse_args()
    sys.exit(main(a.backend, a.full))
