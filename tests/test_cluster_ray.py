"""Tier 3: several Ray nodes on this machine (``ray.cluster_utils.Cluster``, 127.0.0.1).

The cluster needs a Ray of its own, so ``cluster_scenarios.py`` runs once per
test session in a subprocess (conftest.py's ``cluster_seen``, shared with
test_fleet_cluster.py; these scenarios run on a head and a worker Ray node,
8 ``sn40l_socket`` each) and reports what it saw; each test below checks one promise:

* sockets land where PACK / SPREAD / an explicit map say; a map that cannot
  fit, or names an IP two Ray nodes share, fails at once with the reason;
* TP16 over two emulated nodes runs (llama2-7b shapes, two decoder layers,
  FUSED_HO) with the in-process nanoseconds, and its all-reduce pays the
  scale-out link: 16 sockets take what the closed form with the profile's
  25 GB/s / 5 us scale-out link predicts, far more than the 8 of one node;
* a Ray node lost mid-run: calls name a dead socket, recovery without spare
  capacity says how many sockets need a home and what is free, and after a
  Ray node joins, recovery recreates exactly the lost sockets there and the
  node computes the same nanoseconds and numbers as before;
* every endpoint of every process of the cluster is on 127.0.0.1.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def seen(cluster_seen: dict[str, Any]) -> dict[str, Any]:
    return cluster_seen


def _ok(seen: dict[str, Any], name: str) -> dict[str, Any]:
    assert "cluster" not in seen, seen["cluster"]["error"]  # the Ray cluster did not come up
    part: dict[str, Any] = seen[name]
    assert "error" not in part, part["error"]
    return part


def test_sockets_land_where_the_placement_says(seen: dict[str, Any]) -> None:
    p = _ok(seen, "placement")
    ids = seen["ids"]
    assert len(set(p["pack"])) == 1  # PACK: one Ray node holds all four
    assert sorted(Counter(p["spread"]).values()) == [2, 2]  # SPREAD: two and two
    assert p["map"] == [ids["head"], ids["worker"], ids["worker"], ids["head"]]


def test_placements_that_cannot_work_fail_at_once_with_the_reason(seen: dict[str, Any]) -> None:
    p = _ok(seen, "placement")
    assert "several Ray nodes share that IP" in p["ambiguous_ip_error"]
    assert p["too_many_on_one"]["needed"] == 9 and p["too_many_on_one"]["free"] < 9
    assert "needs 9" in p["too_many_on_one"]["text"]
    assert p["too_many"]["needed"] == 17 and p["too_many"]["free"] < 17
    # Raised by the capacity check before any placement group exists (a placement-group
    # timeout would be a GetTimeoutError, not a NoCapacityError with these fields).


def test_a_killed_socket_is_recreated_on_free_capacity(seen: dict[str, Any]) -> None:
    p = _ok(seen, "placement")
    ids = seen["ids"]
    assert p["killed_error_socket"] == 1
    assert p["map_recovered"]["recreated"] == p["map_recovered_list"] == [1]
    assert p["map_recovered"]["homes"]["1"] in ids.values()
    assert p["map_after"]["sums"] == [10.0] * 4  # 1+2+3+4 on every socket, the new one included


def test_tp16_spans_two_ray_nodes_and_matches_in_process_ns(seen: dict[str, Any]) -> None:
    t = _ok(seen, "tp16")
    assert sorted(Counter(t["where"]).values()) == [8, 8]
    for tp in (8, 16):
        d = t[f"decode_tp{tp}"]
        assert len(d["duration_ns"]) == 1, d  # every socket of the group ends together
        assert d["duration_ns"] == d["local_duration_ns"]
        assert d["n_collectives"] >= 5  # embedding, 2 per layer, LM-head gather


def test_tp16_collectives_pay_the_scale_out_link(seen: dict[str, Any]) -> None:
    t = _ok(seen, "tp16")
    (ar16,), (ar8,) = t["ar16"]["ns"], t["ar8"]["ns"]
    so = t["scale_out"]
    assert ar16 == t["predicted16"]  # the closed form with the profile's scale-out link, to the ns
    assert ar16 > t["predicted16_no_scale_out"]  # the same 16 sockets on intra-node links only
    assert ar16 - ar8 >= so["latency_ns"] - so["link_latency_ns"]  # 5 us vs 1 us per hop
    assert ar16 >= so["latency_ns"] + 8192 * 10**9 // so["bw_bytes_per_s"]  # at least one scale-out hop
    d8, d16 = t["decode_tp8"], t["decode_tp16"]
    assert d16["collectives_ns"][0] > 2 * d8["collectives_ns"][0]
    # a fused kernel hides part of its all-reduce (docs/model.md, pipelined collectives); the whole
    # collective, hidden part included, still pays the scale-out latency at least once
    per_collective = (d16["collectives_ns"][0] + d16["hidden_ns"][0]) / d16["n_collectives"]
    assert per_collective >= so["latency_ns"]


def test_a_lost_ray_node_fails_clearly_then_recovers_on_a_new_one(seen: dict[str, Any]) -> None:
    loss = _ok(seen, "node_loss")
    assert len(loss["lost"]) == 8
    assert loss["dead_error"]["socket"] in loss["lost"]
    nc = loss["no_capacity"]
    assert nc["needed"] == 8 and nc["free"] == 0
    assert "8 socket(s) need a home" in nc["text"] and "0 free" in nc["text"]
    rec = loss["recovered"]
    assert rec["recreated"] == loss["recovered_list"] == loss["lost"]
    assert set(rec["homes"].values()) == {loss["spare"]}
    assert [loss["where_after"][i] for i in loss["lost"]] == [loss["spare"]] * 8
    assert rec["clock_ns"] == 0  # Node.recover: a recreated socket is fresh (clock 0, empty memory)
    assert loss["ar16_after"]["ns"] == loss["ar16_before"]["ns"]  # the recovered node times as before
    assert loss["ar16_functional"]["sums"] == [136.0] * 16  # 1 + 2 + ... + 16


def test_every_cluster_endpoint_is_on_loopback(seen: dict[str, Any]) -> None:
    n = _ok(seen, "netcheck")
    assert n["n_processes"] >= 4 and n["n_connected"] > 0
    assert n["foreign"] == []
