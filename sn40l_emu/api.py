"""The Python API: open an emulator, run any experiment, get a pandas DataFrame.

::

    import sn40l_emu

    with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
        df = emu.run_coe(experts=[10, 50], batch=[8], tokens=[20])
        tp = emu.run_tp_scaling(tp=[1, 8], phase=["decode"])

Keywords are the command-line option names with ``_`` for ``-`` (``batch``,
``prompt_len``, ``tp``, ``set``) or the config field names; values are
checked exactly as on the command line (a bad one raises
:class:`~sn40l_emu.errors.ConfigError`). Each ``run_*`` builds the node it
needs on the emulator's backend, as the command does, and closes it; rows
come back as a DataFrame (nested dicts as ``a.b`` columns) whose
``attrs["config"]`` holds the resolved configuration.

Faults from a script: ``emu.schedule(sn40l_emu.events.KillSocket(3), at="5ms")``, then
``emu.run_coe(experts=6, batch=2, ...)`` runs one CoE workload through the injection
plan (:mod:`sn40l_emu.inject.plan`) and returns its report instead of a DataFrame.

``Emulator(node="NAME")`` attaches to a node started with ``sn40l-emu up``
(its profile and overrides come from the node). Importing this module starts
nothing; Ray starts only when a run on the ``ray`` backend builds a node.
Inside a running asyncio loop (a Jupyter kernel) a run executes in a worker
thread, because the in-process node drives an event loop of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.registry import EXPERIMENTS, experiment

BACKENDS = ("local", "ray")
T = TypeVar("T")


class Emulator:
    """A profile, its overrides and a backend; the experiments run on nodes built from them."""

    def __init__(self, profile: str = "sn40l", backend: str = "local", *, node: str | None = None,
                 overrides: Sequence[str] = (), address: str = "", progress: bool = False) -> None:
        if node is not None:
            from sn40l_emu.cluster import named

            state = named.NodeState.load(node)
            if state is None:
                raise ConfigError("node", node, "the name of a node started with `sn40l-emu up` "
                                                "(see `sn40l-emu status --name NAME`)")
            profile, overrides, backend = state.profile, (*state.overrides, *overrides), "ray"
        if backend not in BACKENDS:
            raise ConfigError("backend", backend, " or ".join(BACKENDS))
        if isinstance(overrides, str):
            overrides = (overrides,)
        self.profile = profile
        self.backend = backend
        self.node_name = node
        self.overrides = tuple(overrides)
        self.address = address
        self.progress = progress
        self.scheduled: list[Any] = []
        self._closed = False
        from sn40l_emu.config import load_profile

        load_profile(profile, list(self.overrides))  # a bad profile or override fails here, not mid-run

    # ---- context -------------------------------------------------------------------------------
    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between runs (each run closes its node); kept for symmetry."""
        self._closed = True

    def __repr__(self) -> str:
        where = f"node={self.node_name!r}" if self.node_name else f"backend={self.backend!r}"
        return f"Emulator(profile={self.profile!r}, {where}, overrides={list(self.overrides)!r})"

    # ---- configs and runs ----------------------------------------------------------------------
    def config(self, command: str, **options: Any) -> Any:
        """The checked config ``command`` would run with these options (the emulator's profile by default)."""
        from sn40l_emu.experiments.options import from_kwargs, opt_fields

        cls = experiment(command).config_class()
        fields = {f.name for f in opt_fields(cls)}
        kw = dict(options)
        for alias in ("platform", "platforms"):
            if alias in kw:
                kw["profile"] = kw.pop(alias)
        if fields & {"profile", "platforms"} and "profile" not in kw:
            kw["profile"] = self.profile
        if "backend" in fields:
            kw.setdefault("backend", self.backend)
        if "address" in fields and self.address:
            kw.setdefault("address", self.address)
        if "overrides" in fields:
            extra = kw.pop("set", kw.pop("overrides", ()))
            kw["set"] = (*self.overrides, *((extra,) if isinstance(extra, str) else tuple(extra)))
        return from_kwargs(cls, kw)

    def run(self, command: str, **options: Any) -> Any:
        """Run one experiment; its rows as a pandas DataFrame (``attrs["config"]``: the config)."""
        from sn40l_emu.experiments.options import to_jsonable
        from sn40l_emu.experiments.rundir import rows_frame

        if self._closed:
            raise ConfigError("emulator", "closed", "an open Emulator (use it inside its `with` block)")
        cfg = self.config(command, **options)
        with self._attached():
            rows = _outside_event_loop(lambda: experiment(command).run(cfg, progress=self.progress))
        df = rows_frame(rows)
        df.attrs["config"] = to_jsonable(cfg)
        df.attrs["command"] = command
        return df

    def run_coe(self, **options: Any) -> Any:
        """The CoE sweep (``sn40l-emu coe``): one row per (platform, experts, batch, tokens).

        With events scheduled (:meth:`schedule`), the run goes through the injection plan
        instead: one CoE workload (``experts``, ``batch``, ``tokens``, ``batches``, ``model``,
        ... as single values) with the events, and the result is its report
        (:class:`sn40l_emu.inject.runner.RunReport`, every request accounted for). The
        scheduled events are used up by that run.
        """
        if self.scheduled:
            return self._run_plan(lambda plan: plan.run_coe(**options))
        return self.run("coe", **options)

    def _run_plan(self, run: Any) -> Any:
        from sn40l_emu.inject import plan as plan_mod

        if self._closed:
            raise ConfigError("emulator", "closed", "an open Emulator (use it inside its `with` block)")
        plan = plan_mod.plan_of(self)
        try:
            with self._attached():
                return _outside_event_loop(lambda: run(plan))
        finally:
            self.scheduled = []
            plan.clear()

    def run_capacity(self, **options: Any) -> Any:
        """Experts per node and nodes needed (``sn40l-emu capacity``)."""
        return self.run("capacity", **options)

    def run_coe_serve(self, **options: Any) -> Any:
        """CoE serving with Poisson arrivals, per cache policy (``sn40l-emu coe-serve``)."""
        return self.run("coe-serve", **options)

    def run_tp_scaling(self, **options: Any) -> Any:
        """Prefill / decode / generate latency vs TP degree (``sn40l-emu tp-scaling``)."""
        return self.run("tp-scaling", **options)

    def run_allreduce_bench(self, **options: Any) -> Any:
        """nccl-tests-style all-reduce sweep (``sn40l-emu allreduce-bench``); sizes take K/M/G."""
        return self.run("allreduce-bench", **options)

    def run_inject(self, scenario: str | Path, **options: Any) -> Any:
        """A fault / bandwidth scenario file (``sn40l-emu inject``): one row of request accounting."""
        options.setdefault("profile", None)
        return self.run("inject", scenario=str(scenario), **options)

    def schedule(self, event: Any, *, at: str | int | None = None, after_requests: int | None = None) -> None:
        """Schedule a typed fault event (``sn40l_emu.events``) for the next :meth:`run_coe`.

        ``at``: a virtual time (``"5ms"``, ns), which may fall inside a step;
        ``after_requests``: once that many requests have ended. Delegates to
        :func:`sn40l_emu.inject.plan.schedule_on`; a bad event raises ``ConfigError``.
        """
        from sn40l_emu.inject.plan import schedule_on

        schedule_on(self, event, at=at, after_requests=after_requests)

    @contextmanager
    def _attached(self) -> Iterator[None]:
        """Runs on the ``ray`` backend attach to the named node (``SN40L_EMU_NODE``) while they run."""
        if self.node_name is None:
            yield
            return
        saved = os.environ.get("SN40L_EMU_NODE")
        os.environ["SN40L_EMU_NODE"] = self.node_name
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("SN40L_EMU_NODE", None)
            else:
                os.environ["SN40L_EMU_NODE"] = saved


def _outside_event_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` here, or in a worker thread when this thread already runs an asyncio loop (Jupyter):
    the in-process node drives its own event loop, which cannot nest inside a running one."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sn40l-emu") as pool:
        return pool.submit(fn).result()


def experiments() -> list[str]:
    """The experiment (command) names ``Emulator.run`` takes."""
    return list(EXPERIMENTS)


def options(command: str) -> list[dict[str, Any]]:
    """Every option of an experiment: name, default, help (what ``sn40l-emu CMD --help`` shows)."""
    from sn40l_emu.experiments.options import option_table

    return option_table(experiment(command).config_class())


def load_run(path: str | Path, table: str = "results") -> Any:
    """A run directory's rows (``results.csv``) as a DataFrame, ``attrs["config"]`` from config.json."""
    import json

    import pandas as pd

    p = Path(path)
    csv = p / f"{table}.csv"
    if not csv.is_file():
        raise ConfigError("run directory", str(path), f"a directory holding {table}.csv (see `sn40l-emu runs`)")
    df = pd.read_csv(csv)
    cfg = p / "config.json"
    if cfg.is_file():
        df.attrs["config"] = json.loads(cfg.read_text())
    return df


def run_file(path: str | Path, *, progress: bool = False) -> Any:
    """An experiment file's rows as a DataFrame (what ``sn40l-emu run FILE`` puts in results.csv)."""
    from sn40l_emu.experiments.run_file import load_experiment, run_experiment
    from sn40l_emu.experiments.rundir import rows_frame

    rows, resolved = run_experiment(load_experiment(path), progress=progress)
    df = rows_frame(rows)
    df.attrs["points"] = resolved
    return df
