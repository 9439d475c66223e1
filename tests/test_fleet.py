"""The fleet: placement policies, the global router's event loop, the footprint search, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sn40l_emu.cli import main
from sn40l_emu.coe.fleet_costs import NodeCosts
from sn40l_emu.coe.fleet_footprint import fleet_p99, smallest_fleet
from sn40l_emu.coe.fleet_policy import FleetCapacityError, FleetPolicy, home_node, place_experts
from sn40l_emu.coe.fleet_sim import simulate_fleet
from sn40l_emu.coe.workload import Request, poisson_arrivals
from sn40l_emu.errors import ConfigError

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow


def _costs(total_experts: int = 1000, cache_slots: int = 8) -> NodeCosts:
    """Hand-made costs: router 1000 ns + 100 per prompt, switch 5000 ns per load,
    request (P, T) = 10 P + 50 (T - 1) ns."""
    b = 8
    shapes = tuple((p, t, 10 * p, 10 * p + 50 * (t - 1)) for p in (4, 8) for t in (1, 3))
    return NodeCosts("hand", b, tuple(0 if i == 0 else 1000 + 100 * i for i in range(b + 1)),
                     tuple(5000 * k for k in range(b + 1)), shapes, (), (), (), cache_slots * 64, 64,
                     False, total_experts, False, 0, False)


def _stream(n: int, rate: float, n_experts: int, seed: int = 1) -> list[Request]:
    arrivals = poisson_arrivals(rate, n, seed)
    return [Request(i, (i * 7 + i // 3) % n_experts, 4 if i % 2 else 8, 3, a)
            for i, a in enumerate(arrivals)]


def test_placements() -> None:
    hashed = place_experts(FleetPolicy.HASH, 20, 4, 100)
    assert all(len(w) == 1 and w[0] == home_node(e, 4) for e, w in enumerate(hashed))
    assert place_experts(FleetPolicy.LEAST_LOADED, 20, 4, 100) == [tuple(range(4))] * 20
    popular = place_experts(FleetPolicy.POPULARITY, 20, 4, 100, [3] * 60 + [5] * 30 + list(range(20)))
    # shares 61/110, 31/110, 1/110 of 4 nodes, rounded up: 3, 2, 1 replicas
    assert len(popular[3]) == 3 and len(popular[5]) == 2 and len(popular[0]) == 1
    assert popular[3][0] == home_node(3, 4)
    with pytest.raises(FleetCapacityError):
        place_experts(FleetPolicy.HASH, 20, 2, 5)
    with pytest.raises(ConfigError):  # a batch of 8 distinct experts cannot be pinned in 4 slots
        simulate_fleet(_stream(10, 1e3, 8), _costs(cache_slots=4), 1, 8, 8, FleetPolicy.HASH)


def test_every_request_completes_once_and_runs_are_deterministic() -> None:
    reqs = _stream(500, 2e5, 12)
    for pol in FleetPolicy:
        a = simulate_fleet(reqs, _costs(), 3, 12, 4, pol)
        assert [r.request_id for r in a.records] == list(range(500))
        assert all(r.completion_ns > r.arrival_ns and r.start_ns >= r.arrival_ns for r in a.records)
        assert all(r.first_token_ns is not None and r.first_token_ns <= r.completion_ns for r in a.records)
        assert a == simulate_fleet(reqs, _costs(), 3, 12, 4, pol)
        held = a.placement
        assert all(a.node_of[r.id] in held[r.expert] for r in reqs)


def test_one_node_fleet_by_hand() -> None:
    reqs = [Request(0, 0, 4, 3, 0), Request(1, 1, 8, 1, 10)]
    res = simulate_fleet(reqs, _costs(), 1, 2, 8, FleetPolicy.HASH)
    r0, r1 = res.records
    # batch 1 = [r0] at 0: router 1100 + switch 5000, prefill 40, decode 100 -> done 6240
    assert (r0.first_token_ns, r0.completion_ns) == (6140, 6240)
    # batch 2 = [r1] at 6240: router 1100 + switch 5000 + prefill 80
    assert r1.start_ns == 6240 and r1.completion_ns == 6240 + 1100 + 5000 + 80
    assert res.misses == 2 and res.hits == 0


def test_more_nodes_do_not_raise_p99_under_load_and_footprint_finds_the_smallest() -> None:
    reqs = _stream(400, 1e6, 8)
    p99 = [fleet_p99(reqs, _costs(), n, 8, 8, FleetPolicy.LEAST_LOADED) for n in (1, 2, 4, 8)]
    assert all(p is not None for p in p99)
    assert p99 == sorted(p99, reverse=True) and p99[0] > p99[-1]  # type: ignore[type-var]
    target = p99[2]
    assert target is not None
    pt = smallest_fleet(reqs, _costs(), 8, 8, FleetPolicy.LEAST_LOADED, target, 16)
    assert pt.nodes is not None and pt.nodes <= 4 and pt.p99_ns is not None and pt.p99_ns <= target
    below = fleet_p99(reqs, _costs(), pt.nodes - 1, 8, 8, FleetPolicy.LEAST_LOADED) if pt.nodes > 1 else None
    assert below is None or below > target
    never = smallest_fleet(reqs, _costs(), 8, 8, FleetPolicy.LEAST_LOADED, 1, 4)
    assert never.nodes is None


def test_coe_fleet_on_64_sockets_reports_p50_p99_completed_and_nodes_needed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet.json"
    rc = main(["coe-fleet", "--backend", "local", "--nodes", "8", "--experts", "24", "--requests", "400",
               "--rate", "40", "--batch", "4", "--tokens", "4", "--footprint-experts", "8,24",
               "--footprint-requests", "200", "--max-nodes", "16", "--p99-target-ms", "400",
               "--json", str(out), "--out", str(tmp_path / "run")])
    text = capsys.readouterr().out
    assert rc == 0 and "64 sockets" in text and "p99 ms" in text and "nodes needed" in text
    data = json.loads(out.read_text())
    assert {r["policy"] for r in data["rows"]} == {"hash", "popularity", "least-loaded"}
    for r in data["rows"]:
        assert r["completed"] == 400 and r["sockets"] == 64
        assert 0 < r["latency_p50_ns"] <= r["latency_p99_ns"]
    plats = {r["platform"] for r in data["footprint"]}
    assert plats == {"sn40l", "dgx-a100", "dgx-h100"}
    for r in data["footprint"]:
        assert r["nodes_needed"] is None or (1 <= r["nodes_needed"] <= 16 and r["p99_ns"] <= 400e6)
    assert (tmp_path / "run" / "fleet_footprint.png").stat().st_size > 0


def test_bad_fleet_arguments_exit_2() -> None:
    assert main(["coe-fleet", "--backend", "local", "--nodes", "0", "--no-footprint"]) == 2
    assert main(["coe-fleet", "--backend", "local", "--nodes", "1", "--policies", "nope",
                 "--no-footprint"]) == 2
