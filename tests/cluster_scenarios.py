"""The cluster scenarios of the test session, run once in a subprocess of their own.

A ``ray.cluster_utils.Cluster`` (Ray nodes on 127.0.0.1, each advertising 8
``sn40l_socket``) needs a Ray of its own, so it cannot live in the pytest
process (the session fixture may hold one). This script builds ONE cluster for
every cluster test (conftest.py's ``cluster_seen`` runs it; test_cluster_ray.py
and test_fleet_cluster.py assert on what it saw), runs every scenario on it in
order, and writes what it saw to the JSON file named by argv[1]. A scenario that
raises records its traceback instead, so one failure does not hide the rest.

The order is what lets one cluster serve them all (starting a Ray node is the
expensive part): placement, TP16, netcheck and node loss run on a head and one
worker (16 slots; their assertions count on exactly that); node loss replaces
the worker by a spare; the fleet then grows the cluster to four Ray nodes.

Built for a loaded machine: no scenario depends on another having succeeded
(each builds what it needs), every wait for Ray's resource view is bounded
and fails with a message, the JSON is rewritten after every scenario, and a
scenario that would start after ``BUDGET_S`` (argv[2]) is skipped so the
script always reaches its own clean shutdown instead of being killed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before `import ray`: a private temp root (the address file and session dirs of this
# cluster stay out of /tmp/ray, which other Ray users of this machine share).
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sn40lc-", dir="/tmp")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

# Notice a lost Ray node in about 5 s (Ray's default: 15 s), yet never give up on a live one
# that a loaded machine slows down. A killed raylet refuses the check at once, so it fails
# 10 checks in 10 periods; a live one must leave 10 checks in a row unanswered for 5 s each.
# (300 ms / 300 ms / 3 declared the spare node dead at a load average of 40 on 2 cores.)
FAST_HEALTH_CHECK = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 5000,
    "health_check_failure_threshold": 10,
}
SOCKETS_PER_RAY_NODE = 8
SETTLE_S = 180.0  # Ray frees a closed actor's slot late on a loaded machine; bounded, never a timing assert


def main(out_path: str, budget_s: float = 600.0) -> int:
    from sn40l_emu.cluster.bringup import (
        LOOPBACK,
        NAMESPACE,
        SOCKET_RESOURCE,
        lean_head,
        prepare_env,
    )

    prepare_env()
    import ray
    from fleet_cluster_scenario import scenario_fleet  # this script's directory is on sys.path
    from ray.cluster_utils import Cluster

    out: dict[str, Any] = {"timings_s": {}}
    t0 = time.monotonic()  # wall-clock ok: test bookkeeping

    def mark(name: str) -> None:
        out["timings_s"][name] = round(time.monotonic() - t0, 1)  # wall-clock ok

    node_args = {"num_cpus": 2, "resources": {SOCKET_RESOURCE: SOCKETS_PER_RAY_NODE},
                 "node_ip_address": LOOPBACK}
    _patient_raylet_start()
    cluster = Cluster(initialize_head=False)
    state: dict[str, Any] = {"cluster": cluster, "node_args": node_args}
    scenarios: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
        ("placement", scenario_placement),
        ("tp16", scenario_tp16),
        ("netcheck", scenario_netcheck),
        ("node_loss", scenario_node_loss),
        ("fleet", lambda st: scenario_fleet(st, lambda: _add_ray_node(cluster, node_args), _settle,
                                            SOCKETS_PER_RAY_NODE)),
    ]
    try:
        with lean_head(node_args, FAST_HEALTH_CHECK) as head_args:  # the head the emulator starts (bringup.py)
            _add_ray_node(cluster, head_args)
        worker = _add_ray_node(cluster, node_args)
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
        ids = {"head": cluster.head_node.node_id, "worker": worker.node_id}
        out["ids"] = state["ids"] = ids
        mark("cluster_up")
        for name, fn in scenarios:
            if time.monotonic() - t0 > budget_s:  # wall-clock ok: test bookkeeping
                out[name] = {"error": f"skipped: the {budget_s:.0f} s budget of this script is spent"}
                continue
            try:
                out[name] = fn(state)
            except Exception:
                out[name] = {"error": traceback.format_exc()}
            mark(name)
            Path(out_path).write_text(json.dumps(out, indent=1, default=str))
    except Exception:
        out["cluster"] = {"error": traceback.format_exc()}  # the cluster itself did not come up
    finally:
        node = state.get("node16")
        if node is not None:
            node.close()
        ray.shutdown()
        cluster.shutdown()
        mark("shutdown")
        Path(out_path).write_text(json.dumps(out, indent=1, default=str))
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    return 0


NODE_START_S = 120.0  # how long a raylet may take to register on a loaded machine


def _patient_raylet_start() -> None:
    """Let a starting Ray node wait up to ``NODE_START_S`` to register, not Ray's fixed 30 s.

    ``ray._private.node.Node`` polls ``services.get_node`` for 30 s (hard-coded), which a
    raylet on a machine with a load of 20 on 2 cores does not always make. Wrapping the
    poll keeps it bounded (``NODE_START_S``) and changes nothing once the node is up.
    """
    import ray._private.services as services

    original = getattr(services, "get_node", None)
    if original is None or getattr(original, "_patient", False):
        return

    def get_node(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + NODE_START_S  # wall-clock ok: waiting on Ray
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:  # wall-clock ok
                    raise
                time.sleep(0.5)  # wall-clock ok

    get_node._patient = True  # type: ignore[attr-defined]
    services.get_node = get_node


def _add_ray_node(cluster: Any, node_args: dict[str, Any], attempts: int = 4) -> Any:
    """``cluster.add_node``, retried when Ray's fixed 30 s raylet start-up wait runs out.

    On a loaded machine a raylet can take longer than the 30 s Ray allows it to
    register, and Ray then raises "timed out during startup". The processes that
    attempt started are this script's own children: they are stopped by pid
    before the next attempt.
    """
    import psutil

    me = psutil.Process()
    for attempt in range(attempts):
        before = {p.pid for p in me.children(recursive=True)}
        try:
            return cluster.add_node(**node_args)
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            for proc in me.children(recursive=True):
                if proc.pid not in before:
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass
            time.sleep(2)  # wall-clock ok: let the machine breathe before the next attempt
    raise AssertionError("unreachable")


def _profile() -> Any:
    from sn40l_emu.config import load_profile

    return load_profile("sn40l")


def _where(node: Any) -> list[str]:
    return [s["ray_node"] for s in node.status()]


def _settle(free: int, timeout_s: float = SETTLE_S) -> None:
    """Wait until Ray's resource view shows ``free`` socket slots again (it lags a closed node).

    Bounded: after ``timeout_s`` it raises, naming what it saw, so a scenario fails with
    the reason instead of tripping over a slot an earlier scenario's actor still holds.
    """
    from sn40l_emu.cluster.placement import free_sockets_per_node

    deadline = time.monotonic() + timeout_s  # wall-clock ok
    while (have := sum(free_sockets_per_node().values())) < free:
        if time.monotonic() > deadline:  # wall-clock ok
            raise TimeoutError(f"Ray shows {have} free socket slots after {timeout_s:.0f} s; expected {free}")
        time.sleep(0.2)  # wall-clock ok


def _align(node: Any) -> None:
    """All sockets to the latest clock, so a collective starts everywhere at once."""
    clocks = node.clocks()
    node.advance_clocks(dict.fromkeys(range(node.n_sockets), max(clocks)))


def _all_reduce(node: Any, group: tuple[int, ...], *, functional: bool = False) -> dict[str, Any]:
    import numpy as np

    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    _align(node)
    if functional:
        node.load_tensors({i: {"x": np.full(4096, i + 1, dtype=np.float32)} for i in group})
        op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (4096,), "float32", buffer="x")
    else:
        op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, group, (4096,), "bfloat16")
    res = node.run_programs({i: Program.of(f"allreduce-{len(group)}", [op]) for i in group})
    out: dict[str, Any] = {"ns": sorted({r.breakdown_ns["collectives"] for r in res.values()})}
    if functional:
        out["sums"] = [float(node.get_tensors(i, ["x"])["x"][0]) for i in group]
    return out


def scenario_placement(state: dict[str, Any]) -> dict[str, Any]:
    import ray

    from sn40l_emu.cluster.placement import parse_placement
    from sn40l_emu.cluster.ray_node import create_node
    from sn40l_emu.errors import ConfigError, NoCapacityError, SocketDeadError

    prof, ids = _profile(), state["ids"]
    out: dict[str, Any] = {}
    for kind in ("pack", "spread"):
        _settle(16)
        node = create_node(prof, parse_placement(kind, 4), n_sockets=4, trace=False)
        try:
            out[kind] = _where(node)
        finally:
            node.close()
    _settle(16)
    map_file = Path(os.environ["RAY_TMPDIR"]) / "map.json"
    map_file.write_text(json.dumps({"0": ids["head"], "1-2": ids["worker"], "3": ids["head"]}))
    node = create_node(prof, parse_placement(f"map:{map_file}", 4), n_sockets=4, trace=False)
    try:
        out["map"] = _where(node)
        # a socket lost on its own (not its Ray node): recovery finds it a home among the free slots
        ray.kill(node.actors[1], no_restart=True)  # asynchronous: a call may still get through
        deadline = time.monotonic() + SETTLE_S  # wall-clock ok
        while "killed_error_socket" not in out and time.monotonic() < deadline:  # wall-clock ok
            try:
                node.clocks()
            except SocketDeadError as exc:
                out["killed_error_socket"] = exc.socket
            time.sleep(0.1)  # wall-clock ok
        back = node.recover()
        report = node.last_recovery
        out["map_recovered_list"] = back
        out["map_recovered"] = {"recreated": list(report.recreated), "homes": report.homes,
                                "text": str(report)}
        out["map_after"] = _all_reduce(node, (0, 1, 2, 3), functional=True)
    finally:
        node.close()
    map_file.write_text(json.dumps(["127.0.0.1"] * 4))
    try:
        create_node(prof, parse_placement(f"map:{map_file}", 4), n_sockets=4)
    except ConfigError as exc:
        out["ambiguous_ip_error"] = str(exc)
    t = time.monotonic()  # wall-clock ok
    for label, spec, n in (("too_many_on_one", {"0-8": ids["head"]}, 9), ("too_many", None, 17)):
        try:
            if spec is None:
                create_node(prof, parse_placement("pack", n), n_sockets=n)
            else:
                map_file.write_text(json.dumps(spec))
                create_node(prof, parse_placement(f"map:{map_file}", n), n_sockets=n)
        except NoCapacityError as exc:
            out[label] = {"needed": exc.needed, "free": exc.free, "text": str(exc)}
    out["capacity_errors_s"] = round(time.monotonic() - t, 2)  # wall-clock ok
    return out


def scenario_tp16(state: dict[str, Any]) -> dict[str, Any]:
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.collectives.selector import predict_ns, select_algo
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.fabric.topology import make_topology
    from sn40l_emu.program import CollectiveKind, CollectiveOp
    from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

    prof = _profile()
    node = _node16(state)
    out: dict[str, Any] = {"where": _where(node)}
    # llama2-7b shapes, two decoder layers: the whole TP16 decode program (embedding
    # all-reduce, both all-reduces of each layer, LM-head all-gather) at a test's cost.
    model = dataclasses.replace(load_model("llama2-7b"), num_hidden_layers=2)
    book = ProgramBook()
    for tp in (8, 16):
        progs = book.group(model, make_plan(model, tp), Step.decode(1, 128), ExecMode.FUSED_HO)
        _align(node)
        res = node.run_programs(progs)
        local = LocalNode(prof, 16, trace=False).run_programs(progs)
        n_coll = sum(isinstance(op, CollectiveOp) for op in progs[0].ops)
        out[f"decode_tp{tp}"] = {
            "duration_ns": sorted({r.duration_ns for r in res.values()}),
            "collectives_ns": sorted({r.breakdown_ns["collectives"] for r in res.values()}),
            # collective time hidden under the fused kernels (paper §VII): not in the breakdown
            "hidden_ns": sorted({r.hidden_ns for r in res.values()}),
            "local_duration_ns": sorted({r.duration_ns for r in local.values()}),
            "n_collectives": n_coll,
        }
    out["ar16"] = _all_reduce(node, tuple(range(16)))
    out["ar8"] = _all_reduce(node, tuple(range(8)))
    params = prof.p2p.params()
    flat = dataclasses.replace(params, scale_out=params.link)  # what TP16 would cost without the scale-out link
    for label, p in (("predicted16", params), ("predicted16_no_scale_out", flat)):
        topo = make_topology(p.topology, 16)
        group = tuple(range(16))
        algo, k = select_algo(CollectiveKind.ALL_REDUCE, 8192, group, topo, p)
        out[label] = predict_ns(CollectiveKind.ALL_REDUCE, algo, 8192, group, topo, p, k)
    out["scale_out"] = {"bw_bytes_per_s": params.scale_out.bw_bytes_per_s,
                        "latency_ns": params.scale_out.latency_ns,
                        "link_latency_ns": params.link.latency_ns}
    return out


def _node16(state: dict[str, Any]) -> Any:
    """The 16-socket node over both Ray nodes (PACK), made once: after every slot is free again."""
    from sn40l_emu.cluster.placement import parse_placement
    from sn40l_emu.cluster.ray_node import create_node

    if state.get("node16") is None:
        _settle(2 * SOCKETS_PER_RAY_NODE)
        state["node16"] = create_node(_profile(), parse_placement("pack", 16), n_sockets=16, trace=False)
    return state["node16"]


def scenario_netcheck(state: dict[str, Any]) -> dict[str, Any]:
    from sn40l_emu.cluster.netcheck import endpoints, foreign, process_tree

    pids = process_tree([os.getpid()])
    eps = endpoints(pids)
    return {"n_processes": len(pids), "n_endpoints": len(eps),
            "n_connected": sum(e.connected for e in eps),
            "foreign": [str(e) for e in foreign(eps, {"127.0.0.1"})]}


def scenario_node_loss(state: dict[str, Any]) -> dict[str, Any]:
    import ray

    from sn40l_emu.errors import NoCapacityError, SocketDeadError

    node, cluster, ids = _node16(state), state["cluster"], state["ids"]
    before = _where(node)
    lost = [i for i, n in enumerate(before) if n == ids["worker"]]
    out: dict[str, Any] = {"lost": lost, "ar16_before": _all_reduce(node, tuple(range(16)))}
    worker = next(n for n in cluster.worker_nodes if n.node_id == ids["worker"])
    cluster.remove_node(worker, allow_graceful=False)
    deadline = time.monotonic() + SETTLE_S  # wall-clock ok
    while any(n["NodeID"] == ids["worker"] and n["Alive"] for n in ray.nodes()):
        if time.monotonic() > deadline:  # wall-clock ok
            raise TimeoutError(f"the removed Ray node is still alive after {SETTLE_S:.0f} s")
        time.sleep(0.2)  # wall-clock ok
    try:  # the node keeps the clocks itself; asking every actor for its status reaches the dead ones
        node.status()
    except SocketDeadError as exc:
        out["dead_error"] = {"socket": exc.socket, "text": str(exc)}
    t = time.monotonic()  # wall-clock ok
    try:
        node.recover(timeout_s=30)
    except NoCapacityError as exc:
        out["no_capacity"] = {"needed": exc.needed, "free": exc.free, "text": str(exc),
                              "s": round(time.monotonic() - t, 2)}  # wall-clock ok
    spare = _add_ray_node(cluster, state["node_args"])
    out["spare"] = spare.node_id
    back = node.recover(timeout_s=SETTLE_S)
    report = node.last_recovery
    out["recovered_list"] = back
    out["recovered"] = {"recreated": list(report.recreated), "homes": report.homes,
                        "clock_ns": report.clock_ns, "text": str(report)}
    out["where_after"] = _where(node)
    out["ar16_after"] = _all_reduce(node, tuple(range(16)))
    out["ar16_functional"] = _all_reduce(node, tuple(range(16)), functional=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], *(float(a) for a in sys.argv[2:3])))
