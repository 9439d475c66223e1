"""Cost reuse holds no clocks: the node owns virtual time, and its version keys every reuse.

Each test drives a node through :class:`CostReuse` and, side by side, an
identical node that runs everything for real, and compares every socket's
start, end and breakdown. Nothing tells the reuse object about injections,
barriers or power-cycles: there is no call for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sn40l_emu.cluster.node import LocalNode, Node, Versions
from sn40l_emu.config import load_profile
from sn40l_emu.engine.layer_reuse import LayerPrograms
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.socket_actor.state_changes import SetDegradation, SetLink
from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

SN40L = load_profile("sn40l")
SHORT = dataclasses.replace(load_model("llama2-7b"), num_hidden_layers=3)
PLAN = make_plan(SHORT, 8)
BOOK = LayerPrograms(ProgramBook())


def _step(i: int) -> dict[int, Any]:
    return BOOK.group(SHORT, PLAN, Step.decode(1, 128 + i), ExecMode.FUSED_HO)


def _key(results: dict[int, Any]) -> dict[int, tuple[int, int, dict[str, int]]]:
    return {s: (r.start_ns, r.end_ns, r.breakdown_ns) for s, r in results.items()}


def _pair() -> tuple[LocalNode, CostReuse, LocalNode, CostReuse]:
    a, b = LocalNode(SN40L, trace=False), LocalNode(SN40L, trace=False)
    return a, CostReuse(a), b, CostReuse(b, enabled=False)


def test_nodes_satisfy_the_protocol() -> None:
    assert isinstance(LocalNode(SN40L, 2, trace=False), Node)


def test_reused_steps_move_the_nodes_clocks() -> None:
    node, reuse, plain, real = _pair()
    for i in range(4):
        assert _key(reuse.run(_step(i))) == _key(real.run(_step(i)))
        assert node.clocks() == plain.clocks()  # no sync: the node already holds the clocks
    assert reuse.stats.reused_runs == 3 and real.stats.real_runs == 4


@pytest.mark.parametrize("kind", ["link", "degradation"])
def test_an_injection_between_reused_steps_changes_the_next_one(kind: str) -> None:
    """A slower link changes no kernel cost: only the node's version can tell the reuse."""
    node, reuse, plain, real = _pair()
    for i in range(3):
        reuse.run(_step(i))
        real.run(_step(i))
    before = node.version
    for n in (node, plain):  # no invalidate call on the reuse object: there is none
        now = max(n.clocks())
        if kind == "link":
            p2p = SN40L.p2p
            slow = LinkParams(p2p.link_bw_bytes_per_s // 4, p2p.link_latency_ns + 5_000)
            for a in range(8):
                n.apply_change(list(range(8)), SetLink(a, (a + 1) % 8, slow, now))
        else:
            n.apply_change(list(range(8)), SetDegradation(compute_factor=0.5, hbm_factor=0.5))
    assert node.version != before
    got, want = reuse.run(_step(3)), real.run(_step(3))
    assert _key(got) == _key(want)
    undisturbed = CostReuse(LocalNode(SN40L, trace=False), enabled=False)
    for i in range(4):
        last = undisturbed.run(_step(i))
    assert got[0].duration_ns > last[0].duration_ns  # the injection did slow the step down
    assert node.clocks() == plain.clocks()


def test_a_barrier_between_reused_steps_is_seen() -> None:
    node, reuse, plain, real = _pair()
    for i in range(2):
        reuse.run(_step(i))
        real.run(_step(i))
    for n in (node, plain):  # two sockets held back: the offsets differ from the reference
        n.advance_clocks({3: max(n.clocks()) + 12_345, 5: max(n.clocks()) + 777})
    for i in range(2, 5):
        assert _key(reuse.run(_step(i))) == _key(real.run(_step(i)))
    assert node.clocks() == plain.clocks()


def test_costs_survive_a_power_cycle_and_stay_exact() -> None:
    node, reuse, plain, real = _pair()
    for _ in range(2):  # two sweep rows on one node, one reuse object
        node.reset()
        plain.reset()
        for i in range(3):
            assert _key(reuse.run(_step(i))) == _key(real.run(_step(i)))
    first_row_real = 1
    assert reuse.stats.real_runs == first_row_real  # the second row reused the first row's costs
    assert reuse.stats.reused_runs == 5


def test_versions_name_histories_not_counts() -> None:
    v = Versions()
    a = v.bump(("x", 1))
    v.reset()
    assert v.version == 0
    assert v.bump(("x", 1)) == a  # the same history after a power-cycle: the same state
    v.reset()
    b = v.bump(("y", 2))
    assert b not in (0, a)  # a different history never shares a number
    assert v.fresh() not in (0, a, b)
