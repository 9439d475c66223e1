"""Every experiment by command name: its config declaration and a function config -> rows.

One table shared by the Python API (:mod:`sn40l_emu.api`) and experiment
files (``sn40l-emu run``), so both run exactly what the command runs.
Modules are imported when an experiment is looked up, never at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sn40l_emu.errors import ConfigError

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Experiment:
    command: str
    module: str
    config: str  # class name in the module
    runner: str  # function name: (config, progress) -> rows

    def config_class(self) -> type:
        cls: type = getattr(importlib.import_module(self.module), self.config)
        return cls

    def run(self, cfg: Any, *, progress: bool = False) -> Rows:
        fn: Callable[..., Rows] = getattr(importlib.import_module(__name__), self.runner)
        return fn(cfg, progress)


EXPERIMENTS: dict[str, Experiment] = {e.command: e for e in (
    Experiment("coe", "sn40l_emu.experiments.coe_sweep", "SweepConfig", "_run_coe"),
    Experiment("capacity", "sn40l_emu.experiments.coe_sweep", "CapacityConfig", "_run_capacity"),
    Experiment("coe-serve", "sn40l_emu.experiments.coe_serve", "ServeConfig", "_run_serve"),
    Experiment("tp-scaling", "sn40l_emu.experiments.tp_scaling", "ScalingConfig", "_run_tp"),
    Experiment("allreduce-bench", "sn40l_emu.experiments.allreduce_bench", "BenchConfig", "_run_allreduce"),
    Experiment("inject", "sn40l_emu.experiments.inject_cmd", "InjectConfig", "_run_inject"),
)}


def experiment(command: str) -> Experiment:
    try:
        return EXPERIMENTS[command]
    except KeyError:
        raise ConfigError("command", command, ", ".join(EXPERIMENTS)) from None


def _run_coe(cfg: Any, progress: bool) -> Rows:
    from sn40l_emu.experiments.coe_sweep import output_rows, run_sweep

    return output_rows(run_sweep(cfg, progress=progress))


def _run_capacity(cfg: Any, progress: bool) -> Rows:
    from sn40l_emu.experiments.coe_sweep import run_capacity

    return run_capacity(cfg)


def _run_serve(cfg: Any, progress: bool) -> Rows:
    from sn40l_emu.experiments.coe_serve import run_serve_config

    return [{k: v for k, v in r.items() if k != "samples"} for r in run_serve_config(cfg, progress=progress)]


def _run_tp(cfg: Any, progress: bool) -> Rows:
    from sn40l_emu.experiments.tp_scaling import run_scaling

    return run_scaling(cfg, progress=progress)


def _run_allreduce(cfg: Any, progress: bool) -> Rows:
    from sn40l_emu.experiments.allreduce_bench import run_bench_config

    return run_bench_config(cfg)


def _run_inject(cfg: Any, progress: bool) -> Rows:
    """One row: the scenario's request accounting (the per-request rows are in the report)."""
    from sn40l_emu.experiments.inject_cmd import run_scenario_file

    rep = run_scenario_file(cfg.scenario, cfg.backend, profile=cfg.profile, overrides=cfg.overrides)
    return [{"scenario": rep.scenario, "submitted": rep.submitted, "completed": rep.completed,
             "failed": rep.failed, "retried": rep.retried, "events": len(rep.events)}]
