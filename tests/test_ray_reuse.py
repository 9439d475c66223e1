"""Tier 2: cost reuse over socket actors gives the in-process nanoseconds, call for call.

The Ray node keeps the clocks on the driver and hands moved clocks and
power-cycles to the actors with their next program; these tests drive a
:class:`RayNode` and a :class:`LocalNode` through the same sequence (sweep
rows, reused steps, a barrier, an injection, a platform change) and compare
every result and the clocks the actors themselves report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from sn40l_emu import units
from sn40l_emu.cluster.node import LocalNode, ManagedNode
from sn40l_emu.config import load_profile
from sn40l_emu.engine.layer_reuse import LayerPrograms
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.engine.reuse import CostReuse
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.program import AllocOp, CopyOp, DmaFenceOp, Program, Tier
from sn40l_emu.socket_actor.state_changes import SetDegradation, SetLink
from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

pytestmark = pytest.mark.ray
SN40L, H100 = load_profile("sn40l"), load_profile("dgx-h100")
SHORT = dataclasses.replace(load_model("llama2-7b"), num_hidden_layers=2)
BOOK = LayerPrograms(ProgramBook())


@pytest.fixture(scope="module")
def ray_node(ray_session: None) -> Iterator[Any]:
    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(SN40L, name="test-ray-reuse", trace=False)
    yield node
    node.close()


def _load() -> dict[int, Program]:
    ops = [AllocOp("w", Tier.HBM, units.GiB, read_only=True),
           CopyOp("w in", Tier.HOST, Tier.HBM, units.GiB, blocking=False), DmaFenceOp("in")]
    return {s: Program.of("load", ops) for s in range(8)}


def _row(node: ManagedNode, reuse: CostReuse, mode: ExecMode) -> list[Any]:
    """One sweep row: power-cycle, a load without collectives, decode steps, a barrier, an injection."""
    node.reset()
    out: list[Any] = [node.run_programs(_load())]
    plan = make_plan(SHORT, 8)
    for i in range(3):
        out.append(reuse.run(BOOK.group(SHORT, plan, Step.decode(1, 64 + i), mode)))
    node.advance_clocks({2: max(node.clocks()) + 999})
    for i in range(3, 5):
        out.append(reuse.run(BOOK.group(SHORT, plan, Step.decode(1, 64 + i), mode)))
    if node.profile.name == "sn40l":  # a full mesh: socket 0 has a link of its own to socket 1
        p2p = node.profile.p2p
        slow = LinkParams(p2p.link_bw_bytes_per_s // 2, p2p.link_latency_ns)
        node.apply_change(list(range(8)), SetLink(0, 1, slow, max(node.clocks())))
    else:
        node.apply_change([3], SetDegradation(compute_factor=0.5))
    for i in range(5, 7):
        out.append(reuse.run(BOOK.group(SHORT, plan, Step.decode(1, 64 + i), mode)))
    return [{s: (r.start_ns, r.end_ns, r.breakdown_ns) for s, r in res.items()} for res in out]


def test_reuse_on_actors_gives_the_local_ns_across_rows_and_platforms(ray_node: Any) -> None:
    for profile, mode in ((SN40L, ExecMode.FUSED_HO), (H100, ExecMode.GPU)):
        if profile is not SN40L:
            ray_node.reprofile(profile)
        local = LocalNode(profile, trace=False)
        remote_reuse, local_reuse = CostReuse(ray_node), CostReuse(local)
        for _ in range(2):  # two rows: the second reuses the first row's costs on both backends
            assert _row(ray_node, remote_reuse, mode) == _row(local, local_reuse, mode)
            assert ray_node.clocks() == local.clocks()
            assert [s["clock_ns"] for s in ray_node.status()] == local.clocks()  # the actors agree
        assert remote_reuse.stats.reused_runs == local_reuse.stats.reused_runs > 0
