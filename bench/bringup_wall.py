"""Wall time to bring a node up on Ray: start Ray, create 8 socket actors, wire them, first program.

Phases (one private local Ray per round, as ``sn40l-emu coe --backend ray`` starts it):

* ``ray_start_s``: ``start_local_ray`` (``ray.init`` on 127.0.0.1);
* ``create_s``: ``RayNode.create`` with 8 socket actors: placement group,
  actor processes started, same-host endpoints opened, peers connected;
* ``first_program_s``: a 4 KiB all-reduce over the 8 sockets (the actors and links are warm after it);
* ``reprofile_s``: the same actors power-cycled into another platform's sockets
  (what a sweep over platforms pays instead of a new node);
* ``close_s``: killing the actors and stopping Ray.

CPU seconds (wall time on a shared host mostly measures the other load):

* ``ray_processes_cpu_s``: CPU time of the processes ``ray.init`` started, once it
  returned (per process in ``ray_processes``: GCS, raylet, dashboard, agents, ...);
* ``actor_cpu_s``: CPU time of one socket actor's process from its start to the
  end of ``create`` (median over the 8: Python, ``import ray``, the worker's
  registration, our modules, the endpoint and its connections);
* ``actor_import_cpu_s``: of that, importing our modules after ``import ray`` (in a
  fresh interpreter): the ones socket actor 0 holds after the first program (52 of
  them, numpy's import included), the part this project controls;
* ``ray_processes_after_create_cpu_s``: Ray's own processes (not the actors) once
  the node is up.

``--plain`` adds, after each round, one with Ray started by a plain ``ray.init``
(every process Ray starts by default), for a same-run comparison.
``--no-bytecode`` adds, after each round, one without the package's ``__pycache__``
(removed before the round and written again after it): every actor then compiles our
modules from source, as each did before the driver wrote the bytecode
(``sn40l_emu/cluster/bytecode.py``; with ``PYTHONDONTWRITEBYTECODE=1`` and an editable install).

Target: node bring-up (``ray_start_s + create_s``) in a few seconds. Medians
over ``--rounds``; prints a table and writes ``bench/results/bringup_wall.json``.

    .venv/bin/python bench/bringup_wall.py [--rounds 1] [--plain] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from benchlib import RESULTS, children_cpu_s, git_rev, proc_cpu_s, write_json


def _ray_processes() -> dict[str, float]:
    """CPU seconds of each process this one started (Ray's), summed by short name."""
    out: dict[str, float] = {}
    for name, cpu_s in children_cpu_s().values():
        out[name] = round(out.get(name, 0.0) + cpu_s, 2)
    return out


def _drop_bytecode() -> None:
    """Remove the package's ``__pycache__`` folders (the ``--no-bytecode`` rounds)."""
    import shutil

    from sn40l_emu.cluster.bytecode import PACKAGE_DIR

    for cache in PACKAGE_DIR.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def _write_bytecode() -> None:
    import compileall

    from sn40l_emu.cluster.bytecode import PACKAGE_DIR

    compileall.compile_dir(str(PACKAGE_DIR), quiet=2)


def _import_cpu_s(modules: list[str]) -> float:
    """CPU seconds to import ``modules`` (our modules a socket actor holds once it has run a
    program) after ``import ray``, in a fresh interpreter: what each actor pays for them."""
    code = ("import importlib, sys, time, ray; t = time.process_time(); "
            "[importlib.import_module(m) for m in sys.argv[1:]]; print(time.process_time() - t)")
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _actor_modules(node: Any) -> list[str]:
    """Our modules loaded in socket actor 0 (Ray's ``__ray_call__`` runs a function in the actor)."""
    import ray

    def ours(actor: Any) -> list[str]:
        import sys

        return sorted(m for m in sys.modules if m.startswith("sn40l_emu"))

    return list(ray.get(node.actors[0].__ray_call__.remote(ours), timeout=60))


def _start_plain_ray() -> Any:
    """Ray started by ``ray.init`` alone, as ``start_local_ray`` did before it left out Ray's
    unused processes (the ``--plain`` comparison): every process Ray starts by default."""
    import logging
    import tempfile

    import ray

    from sn40l_emu.cluster.bringup import LOOPBACK, NAMESPACE, SOCKET_RESOURCE, LocalRay

    temp_dir = tempfile.mkdtemp(prefix="sn40l-ray-")
    ray.init(num_cpus=2, resources={SOCKET_RESOURCE: 16}, include_dashboard=False, _temp_dir=temp_dir,
             _node_ip_address=LOOPBACK, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    return LocalRay(temp_dir=temp_dir)


def one_round(plain: bool = False) -> dict[str, Any]:
    from sn40l_emu.cluster.bringup import start_local_ray
    from sn40l_emu.cluster.ray_node import RayNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program

    sn40l, dgx = load_profile("sn40l"), load_profile("dgx-h100")
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    ray = _start_plain_ray() if plain else start_local_ray(num_cpus=2, sockets=16)
    out["ray_start_s"] = time.perf_counter() - t0
    procs = _ray_processes()
    out["ray_processes_cpu_s"] = round(sum(procs.values()), 2)
    out["ray_processes"] = procs
    try:
        t0 = time.perf_counter()
        node = RayNode.create(sn40l, trace=False)
        out["create_s"] = time.perf_counter() - t0
        out["actor_cpu_s"] = statistics.median(proc_cpu_s(pid) for pid in node.pids())
        actors = [proc_cpu_s(pid) for pid in node.pids()]
        out["actors_cpu_s"] = round(sum(actors), 2)
        # Ray's own processes once the node is up (its agents are still loading when ray.init returns)
        out["ray_processes_after_create_cpu_s"] = round(sum(_ray_processes().values()) - sum(actors), 2)
        try:
            t0 = time.perf_counter()
            op = CollectiveOp("hello", CollectiveKind.ALL_REDUCE, tuple(range(8)), (1024,), "float32")
            node.run_programs({s: Program.of("hello", [op]) for s in range(8)})
            out["first_program_s"] = time.perf_counter() - t0
            out["actor_modules"] = _actor_modules(node)
            t0 = time.perf_counter()
            node.reprofile(dgx)
            out["reprofile_s"] = time.perf_counter() - t0
        finally:
            t0 = time.perf_counter()
            node.close()
    finally:
        ray.shutdown()
        out["close_s"] = time.perf_counter() - t0
    out["bringup_s"] = out["ray_start_s"] + out["create_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--plain", action="store_true",
                        help="after each round, one with Ray as plain ray.init starts it (same-run comparison)")
    parser.add_argument("--json", default=str(RESULTS / "bringup_wall.json"))
    parser.add_argument("--no-bytecode", action="store_true",
                        help="after each round, one without the package's bytecode (same-run comparison)")
    args = parser.parse_args()

    from sn40l_emu.cluster.bringup import prepare_env

    prepare_env()  # writes the bytecode once (compile_package); the --no-bytecode rounds remove it
    rounds, plain, nobc = [], [], []
    for _ in range(args.rounds):
        rounds.append(one_round())
        if args.plain:
            plain.append(one_round(plain=True))
        if args.no_bytecode:
            _drop_bytecode()
            try:
                nobc.append(one_round())
                nobc[-1]["actor_import_cpu_s"] = _import_cpu_s(nobc[-1]["actor_modules"])
            finally:
                _write_bytecode()
    for r in rounds:
        r["actor_import_cpu_s"] = _import_cpu_s(r["actor_modules"])
    med: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]
                           if k not in ("ray_processes", "actor_modules")}
    med_plain: dict[str, Any] = {k: round(statistics.median(r[k] for r in plain), 3) for k in plain[0]
                                 if k not in ("ray_processes", "actor_modules")} if plain else {}
    med_nobc: dict[str, Any] = {k: round(statistics.median(r[k] for r in nobc), 3) for k in nobc[0]
                                if k not in ("ray_processes", "actor_modules")} if nobc else {}
    doc = {"bench": "bringup_wall", "sockets": 8, "median": med,
           "rounds": [{k: v if isinstance(v, (dict, list)) else round(v, 3) for k, v in r.items()} for r in rounds],
           "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                    "load_avg": os.getloadavg()}, "ray_processes_cpu_s_by_process": rounds[-1]["ray_processes"],
           "plain_ray_init": {"median": med_plain,
                              "rounds": [{k: v if isinstance(v, (dict, list)) else round(v, 3) for k, v in r.items()}
                                         for r in plain]} if plain else None,
           "no_bytecode": {"median": med_nobc,
                           "rounds": [{k: v if isinstance(v, (dict, list)) else round(v, 3) for k, v in r.items()}
                                      for r in nobc]} if nobc else None,
           "git": git_rev()}
    print(f"node bring-up on Ray, 8 socket actors, medians of {args.rounds} round(s)")
    for k, v in med.items():
        print(f"  {k:32s} {v:7.3f}" + (f"   plain ray.init {med_plain[k]:7.3f}" if k in med_plain else "")
              + (f"   no bytecode {med_nobc[k]:7.3f}" if k in med_nobc else ""))
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
