"""A CoE fleet on a four-Ray-node ``cluster_utils`` cluster (32 sockets) gives the in-process ns.

The cluster needs a Ray of its own, so the fleet runs as the last scenario of the
session's one cluster run (``cluster_scenarios.py`` with ``fleet_cluster_scenario.py``,
in a subprocess started by conftest.py's ``cluster_seen``: bounded by a generous
timeout, no timing asserted); the tests check where the sockets landed and the nanoseconds.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def seen(cluster_seen: dict[str, Any]) -> dict[str, Any]:
    assert "cluster" not in cluster_seen, cluster_seen["cluster"]["error"]  # the Ray cluster did not come up
    data: dict[str, Any] = cluster_seen.get("fleet", {"error": "the cluster run ended before the fleet"})
    assert "error" not in data, data["error"]
    assert "error" not in data["ray"], data["ray"]["error"]
    return data


def test_each_emulated_node_sits_on_one_ray_node_and_the_fleet_spans_all_four(seen: dict[str, Any]) -> None:
    ray = seen["ray"]
    assert all(len(h) == 1 for h in ray["homes"])  # a node's eight sockets share one machine
    assert sorted(h[0] for h in ray["homes"]) == sorted(seen["ray_node_ids"])  # one per Ray node


def test_the_fleet_on_ray_gives_the_in_process_nanoseconds(seen: dict[str, Any]) -> None:
    ray, local = seen["ray"], seen["local"]
    assert ray["costs"] == local["costs"]
    assert ray["rows"] == local["rows"]  # the wall-clock parts ("wall_s") are not compared
    for r in ray["rows"]:
        assert r["completed"] == r["requests"] == 300 and r["sockets"] == 32
        assert 0 < r["latency_p50_ns"] <= r["latency_p99_ns"]
