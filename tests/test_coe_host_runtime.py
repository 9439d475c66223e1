"""The CoE coordinator pays the host runtime as tp-scaling does (workload/host_runtime.py).

Exact nanoseconds from the closed forms: admitting a batch (tokenize every
prompt token, one scheduling pass), then after every device step of every
(prompt, expert) pair the serving loop's step overhead and the output token's
host terms. Host time delays every socket alike, so the sockets' phases do not
move when it changes.
"""

from __future__ import annotations

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.coe.coordinator import BatchResult, CoECoordinator, CoESetup
from sn40l_emu.coe.workload import Request
from sn40l_emu.config import load_profile
from sn40l_emu.workload import load_model
from sn40l_emu.workload.host_runtime import decode_step_ns

TINY = load_model("tiny-llama")
NO_HOST = ("runtime.tokenize_ns_per_token=0", "runtime.schedule_us=0", "runtime.token_overhead_us=0",
           "runtime.sample_us=0", "runtime.step_overhead_us=0")


def _batch(profile: str, overrides: tuple[str, ...], reqs: list[Request]) -> tuple[BatchResult, int]:
    prof = load_profile(profile, ["node.sockets=2", *overrides])
    coord = CoECoordinator(LocalNode(prof), CoESetup(TINY, 4, len(reqs), 6, max(r.output_tokens for r in reqs)))
    coord.load()
    step = decode_step_ns(prof, TINY.vocab_size, 1).total_ns
    return coord.run_batch(reqs), step


def _check(profile: str, overrides: tuple[str, ...] = ()) -> None:
    reqs = [Request(0, 1, 6, 3), Request(1, 2, 4, 1)]
    res, step = _batch(profile, overrides, reqs)
    r = load_profile(profile, list(overrides)).runtime
    admit = (6 + 4) * r.tokenize_ns_per_token + r.schedule_ns
    assert res.admit_ns == admit
    assert res.host_ns == admit + (3 + 1) * step  # one host step after each device step
    assert res.total_ns == (res.router_ns + res.switch_ns + res.program_load_ns + res.argument_load_ns
                            + res.host_ns + res.expert_ns)
    host = [e for e in res.events if e.track == "host" and e.name.split(" ")[0] not in
            ("program_load", "argument_load")]
    assert sum(e.dur_ns for e in host) == res.host_ns
    base, _ = _batch(profile, NO_HOST, reqs)
    assert (res.router_ns, res.switch_ns, res.expert_ns) == (base.router_ns, base.switch_ns, base.expert_ns)
    assert res.total_ns - base.total_ns == res.host_ns - base.host_ns > 0


def test_sn40l_pays_admission_and_per_token_host_terms_exactly() -> None:
    _check("sn40l")


def test_dgx_pays_the_frameworks_step_overhead_per_step() -> None:
    _, step = _batch("dgx-a100", (), [Request(0, 0, 6, 2)])
    assert step >= load_profile("dgx-a100").runtime.step_overhead_ns
    _check("dgx-a100")
