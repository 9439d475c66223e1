"""The fast injection path (exact references for busy links, batched traced collectives) changes
no nanosecond and no outcome: each test compares it with the message-by-message path."""

from __future__ import annotations

from typing import Any

import pytest

from sn40l_emu import events
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.engine.layer_reuse import LayerPrograms
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.inject import InjectionPlan
from sn40l_emu.inject.driver import FaultDriver
from sn40l_emu.inject.runner import RunReport
from sn40l_emu.socket_actor.state_changes import SetLink
from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

# a link at 0.1 % keeps draining after its sender moved on: every run leaves it busy
SLOW_LINK = 0.001


def _plan(kill_at: str) -> InjectionPlan:
    plan = InjectionPlan(profile="sn40l", backend="local")
    plan.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=SLOW_LINK), at="50us")
    plan.schedule(events.KillSocket(3, mode="virtual"), after_requests=2)
    plan.schedule(events.KillSocket(5, mode="virtual"), at=kill_at)
    return plan


def _run(kill_at: str) -> RunReport:
    return _plan(kill_at).run_coe(model="tiny-llama", experts=6, batch=2, tokens=3, prompt_len=4, batches=2,
                                  workload="uniform")


def _count(report: RunReport, what: str) -> int:
    return sum(what in e.name for e in report.trace)


def _fast_then_slow(kill_at: str) -> tuple[RunReport, RunReport]:
    fast = _run(kill_at)
    FaultDriver.fast = False
    try:
        slow = _run(kill_at)
    finally:
        FaultDriver.fast = True
    return fast, slow


@pytest.mark.slow  # the message-by-message path is the slow one: ~10 CPU-s
def test_fast_path_same_nanoseconds_and_outcomes_as_message_by_message() -> None:
    fast, slow = _fast_then_slow("5ms")
    assert fast.to_json() == slow.to_json()  # rows, per-request end_ns, events (applied, struck, recovery)
    assert fast.submitted == fast.completed + fast.failed == 4
    assert fast.retried > 0  # the faults did stop steps
    kill = fast.events[2]  # the timed kill still strikes at its ns, inside a step
    assert kill.applied_at_ns == 5_000_000 and kill.struck_at_ns == slow.events[2].struck_at_ns
    assert kill.struck_at_ns is not None and kill.struck_at_ns >= 5_000_000
    # the fast path did repeat runs that left the slow link busy, and marked fewer messages
    assert _count(fast, "reused cost") > _count(slow, "reused cost")
    assert 0 < _count(fast, "send to") < _count(slow, "send to")


def _decode_steps(node: LocalNode, reuse: CostReuse | None, steps: int) -> list[tuple[Any, ...]]:
    """Decode steps with a host delay between them; after each, the clocks and the busy links."""
    model = load_model("tiny-llama")
    plan = make_plan(model, node.n_sockets, tuple(range(node.n_sockets)))
    book = LayerPrograms(ProgramBook())
    out = []
    for i in range(steps):
        progs = book.group(model, plan, Step.decode(1, 4 + i % 2), ExecMode.FUSED_HO)
        if reuse is None:
            node.run_programs(progs)
        else:
            reuse.run(progs)
        node.advance_clocks({s: t + 1_000 for s, t in enumerate(node.clocks())})
        out.append((tuple(node.clocks()), node.busy_links(list(range(node.n_sockets)))))
    return out


def _degraded_node() -> LocalNode:
    prof = load_profile("sn40l")
    node = LocalNode(prof, trace=False)
    bw = max(1, int(prof.p2p.link_bw_bytes_per_s * SLOW_LINK))
    node.apply_change(list(range(node.n_sockets)), SetLink(0, 1, LinkParams(bw, prof.p2p.link_latency_ns), 0))
    return node


def test_exact_references_repeat_busy_link_runs_exactly() -> None:
    plain = _decode_steps(_degraded_node(), None, 6)
    node = _degraded_node()
    reuse = CostReuse(node)
    assert _decode_steps(node, reuse, 6) == plain
    assert reuse.stats.reused_runs + reuse.layer_stats.reused_runs > 0

    old = CostReuse(_degraded_node(), exact=False)
    _decode_steps(old.node, old, 6)  # type: ignore[arg-type]
    assert old.stats.reused_runs + old.layer_stats.reused_runs < reuse.stats.reused_runs + reuse.layer_stats.reused_runs


def test_a_given_node_gets_its_message_marks_back() -> None:
    node = LocalNode(load_profile("sn40l"))
    plan = InjectionPlan(profile="sn40l", backend="local", node=node)
    plan.schedule(events.LinkDegrade(src=0, dst=1, bw_factor=0.5), at="10us")
    plan.run_coe(model="tiny-llama", experts=4, batch=2, tokens=2, prompt_len=4, batches=2, workload="uniform")
    assert node.message_marks and all(m.message_marks for m in node.models)


@pytest.mark.slow  # the paper-size example: a few seconds in-process
def test_full_size_example_accounts_for_every_request() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "examples" / "inject_coe.py"), "--full"], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "requests: submitted 32, completed 32, failed 0" in r.stdout
