"""Collectives pipelined with compute inside a fused kernel (socket_actor/pipeline.py).

Exact nanoseconds from the closed form ``hidden = (K-1) min(B, C) // K``, on a
two-socket program and on the TP8 llama2-7b decode rows.
"""

from __future__ import annotations

import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.config import load_profile
from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling
from sn40l_emu.program import (
    CollectiveKind,
    CollectiveOp,
    KernelOp,
    Launch,
    MemStream,
    Program,
    Stage,
    StreamKind,
    Tier,
)
from sn40l_emu.socket_actor.pipeline import collective_idle_ns, hidden_ns
from sn40l_emu.socket_actor.socket_model import host_rate_per_socket
from sn40l_emu.socket_actor.tile import kernel_cost

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

SN40L = load_profile("sn40l")


@pytest.mark.parametrize(("body", "coll", "tiles", "want"), [
    (8_000, 800, 8, 700),      # collective-chunk bound: (K-1) q
    (800, 8_000, 8, 700),      # producer-tile bound: (K-1) p
    (1_000, 1_000, 4, 750),
    (1_000, 999, 1, 0),        # one tile: kernel then collective
    (0, 500, 8, 0),
])
def test_hidden_closed_form(body: int, coll: int, tiles: int, want: int) -> None:
    assert hidden_ns(body, coll, tiles) == want


def _program(fused: bool, weight_bytes: int, elems: int) -> dict[int, Program]:
    k = KernelOp("mm", (Stage("mm", 10_000, 1024),), (MemStream(Tier.HBM, weight_bytes, StreamKind.WEIGHTS),),
                 Launch.HO, fused=fused)
    c = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, (0, 1), (elems,), "bfloat16")
    return {s: Program(f"p{s}", (k, c)) for s in (0, 1)}


@pytest.mark.parametrize(("weight_bytes", "elems"), [(16 << 20, 4096), (1 << 20, 1 << 20)])
def test_fused_kernel_hides_its_all_reduce_exactly(weight_bytes: int, elems: int) -> None:
    n = LocalNode(SN40L, trace=True)
    body = kernel_cost(_program(True, weight_bytes, elems)[0].ops[0], SN40L.socket, SN40L.tile, SN40L.launch,
                       host_rate_per_socket(SN40L)).body_ns
    coll = collective_idle_ns(_program(True, weight_bytes, elems)[0].ops[1], SN40L, n.n_sockets)
    plain = n.run_programs(_program(False, weight_bytes, elems))[0]
    assert plain.duration_ns == body + coll and plain.hidden_ns == 0
    n = LocalNode(SN40L, trace=True)
    fused = n.run_programs(_program(True, weight_bytes, elems))[0]
    want_hidden = (SN40L.tile.collective_tiles - 1) * min(body, coll) // SN40L.tile.collective_tiles
    assert fused.hidden_ns == want_hidden > 0
    assert fused.duration_ns == body + coll - want_hidden
    assert fused.breakdown_ns["collectives"] == coll - want_hidden
    assert sum(fused.breakdown_ns.values()) == fused.duration_ns
    tracks = {e.track for e in fused.events}
    assert "p2p.hidden" in tracks


def test_one_tile_profile_runs_kernel_then_collective() -> None:
    prof = load_profile("sn40l", ["tile.collective_tiles=1"])
    r = LocalNode(prof, trace=False).run_programs(_program(True, 16 << 20, 4096))[0]
    assert r.hidden_ns == 0


def test_tp8_fused_ho_decode_hides_collectives_and_unfused_does_not() -> None:
    rows = run_scaling(ScalingConfig(tps=(8,), phases=("decode",), modes=("unfused", "fused-ho")))
    by = {r["mode"]: r for r in rows}
    assert by["unfused"]["collectives_hidden_ns"] == 0
    fused = by["fused-ho"]
    assert fused["collectives_hidden_ns"] > 0
    off = run_scaling(ScalingConfig(tps=(8,), phases=("decode",), modes=("fused-ho",),
                                    overrides=("tile.collective_tiles=1",)))[0]
    # the hidden time is exactly what the step saves against kernel-then-collective
    assert off["latency_ns"] - fused["latency_ns"] == fused["collectives_hidden_ns"]
    assert off["breakdown_ns"]["collectives"] - fused["breakdown_ns"]["collectives"] == fused["collectives_hidden_ns"]


def test_gpu_rows_hide_nothing() -> None:
    rows = run_scaling(ScalingConfig(tps=(8,), phases=("decode",), profile="dgx-h100"))
    assert rows[0]["collectives_hidden_ns"] == 0
