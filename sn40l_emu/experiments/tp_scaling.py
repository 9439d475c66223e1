"""`sn40l-emu tp-scaling`: latency of a model's prefill and decode vs the TP degree.

One row per (tp, phase, mode) in timing mode (full-size models, no weights in
memory). TP group = sockets 0..tp-1 of a node of ``max(sockets, largest tp)``
sockets (TP16 = two nodes: the P2P layer puts the scale-out link between
sockets of different nodes), power-cycled before every row. A group within
the first eight sockets sees exactly the links of an eight-socket node (a
test checks the nanoseconds), so adding TP16 to a sweep changes no other row.

Phases:

* ``prefill``: one prompt of ``prompt_len`` tokens per sequence; ``context_len`` 0.
* ``decode``: one step with ``context_len`` tokens already cached.
* ``speculative`` (with ``--set runtime.spec_draft_model=NAME``): one speculative
  decoding iteration at ``context_len`` (workload/speculative.py): the draft
  model's ``runtime.spec_draft_len`` decode steps, then the target's step over
  ``k + 1`` new tokens; ``tokens_per_s_per_user`` = E[tokens per iteration] /
  latency with E = (1 - a^(k+1)) / (1 - a), a = ``runtime.spec_acceptance``.
* ``generate`` (``--tokens N``): the whole request, prefill (which yields
  output token 1) then N-1 decode steps at context ``prompt_len .. prompt_len+N-2``,
  with step-level :class:`~sn40l_emu.engine.reuse.CostReuse` so only the
  first decode step of a shape runs; ``context_len`` = the KV-cache length at
  the end (``prompt_len + N - 1``).

Defaults (sensible for Llama2-7B serving one user): batch 1, prompt 128
tokens, decode at context 128 (the first step after that prompt).

Each row reports:

* ``latency_ns``: when the last socket of the group finishes, from a common start.
* ``breakdown_ns``: the critical-path attribution of that socket (its own
  timeline: kernel bodies attributed to what bounds them, launches, collective
  time including waiting for peers), folded from the socket's seven terms:
  ``activations`` (intermediates through HBM, SRAM spills), ``copies`` and
  ``other`` all go to ``other`` (activations are neither weights nor cache,
  and putting them in ``weights`` would hide what fusion removes). Adds up
  exactly to ``latency_ns`` (asserted).
* ``host`` (a breakdown term) and ``host_ns`` (its named parts): the host
  runtime between device steps (workload/host_runtime.py): per request
  tokenization, scheduling and Program/Argument Load (prefill and generate
  rows; generate also the prefill -> decode switch), per output token the
  host-link round trip and sampling, per step the framework overhead.
* ``tokens_per_s_per_user``: tokens one sequence advances per second: the
  prompt tokens for prefill, 1 for a decode step, N output tokens for generate.
* ``collectives_hidden_ns``: collective time of that socket hidden under fused
  kernels (SN40L paper §VII: the all-reduce streams out of the kernel tile by
  tile, ``socket_actor/pipeline.py``); not part of the breakdown, which holds
  only the exposed part. 0 in unfused and GPU modes.
* ``hbm_bw_utilization``: bytes that socket streams from HBM (weights, KV,
  activations, spills) / (latency x peak HBM bandwidth).
* ``spilled_layers`` / ``spill_tier``: decoder layers whose weights do not fit
  in HBM (weights + KV cache + activation scratch, the static memory plan) and
  stream from DDR (SN40L, docs/model.md §1: weights spill last, so whole layers
  spill only when nothing else is left) or from host DRAM over PCIe (GPU).

Execution modes: on a GPU platform every row runs :data:`ExecMode.GPU`
(reported ``"gpu"``) whatever ``--mode`` says.

Speed, without approximation (each step is checked against a full run in
``tests/test_tp_scaling.py``): programs are assembled from a one-layer build
(:class:`~sn40l_emu.engine.layer_reuse.LayerPrograms`), a step runs
layer by layer with the cost of identical layers reused, and every
decode step after the first reuses the first one's cost shifted by the extra
KV-cache reads (both by :class:`~sn40l_emu.engine.reuse.CostReuse`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sn40l_emu.errors import ConfigError, ShardingError
from sn40l_emu.experiments.options import (
    MAX_BATCH,
    MAX_TOKENS,
    backend_field,
    check_fields,
    option,
    overrides_field,
    profile_field,
)
from sn40l_emu.experiments.rows import ROW_BREAKDOWN_KEYS, per_token_ns
from sn40l_emu.program import KernelOp, Program, Tier
from sn40l_emu.workload import ExecMode, ModelConfig, ShardPlan, Step
from sn40l_emu.workload.host_runtime import HostTime, decode_step_ns, generate_ns, prefill_ns, step_ns
from sn40l_emu.workload.memory_plan import Fit, fit_in_hbm
from sn40l_emu.workload.placement import Placement
from sn40l_emu.workload.speculative import draft_steps, expected_tokens, verify_step

if TYPE_CHECKING:
    from sn40l_emu.cluster.node import ManagedNode
    from sn40l_emu.config import NodeProfile
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.socket_actor.socket_model import ProgramResult

PLATFORMS = ("sn40l", "dgx-a100", "dgx-h100")
PHASES = ("prefill", "decode", "generate", "speculative")
MODE_NAMES: Mapping[str, ExecMode] = {
    "unfused": ExecMode.UNFUSED,
    "fused-so": ExecMode.FUSED_SO,
    "fused-ho": ExecMode.FUSED_HO,
    "gpu": ExecMode.GPU,
}
# socket breakdown term -> row term (see the module docstring)
_FOLD = {"compute": "compute", "weights": "weights", "kv": "kv", "collectives": "collectives",
         "launch": "launch", "activations": "other", "copies": "other", "other": "other"}


def mode_name(mode: ExecMode) -> str:
    return next(k for k, v in MODE_NAMES.items() if v is mode)


@dataclass(frozen=True)
class ScalingConfig:
    """What to sweep; ``profile`` is a shipped platform name or a YAML path."""

    model: str = option("llama2-7b", "shipped model name or path to a config.json")
    tps: tuple[int, ...] = option((1, 2, 4, 8), "TP degrees, e.g. 1,2,4,8,16 (16 = two nodes)", flag="tp",
                                  lo=1, hi=1024)
    phases: tuple[str, ...] = option(("prefill", "decode"),
                                     "phases to run ('generate' needs --tokens; 'speculative' needs "
                                     "--set runtime.spec_draft_model=NAME)",
                                     flag="phase", choices=PHASES)
    modes: tuple[str, ...] = option(("unfused", "fused-so", "fused-ho"),
                                    "execution modes (GPU platforms always run 'gpu')", flag="mode",
                                    choices=tuple(MODE_NAMES))
    profile: str = profile_field("sn40l")
    overrides: tuple[str, ...] = overrides_field()
    batch: int = option(1, "sequences per batch", lo=1, hi=MAX_BATCH)
    prompt_len: int = option(128, "prompt tokens per sequence", lo=1, hi=MAX_TOKENS)
    context_len: int = option(128, "tokens already cached in a decode row", lo=1, hi=MAX_TOKENS)
    tokens: int = option(0, "add 'generate' rows: prefill plus N output tokens (N-1 decode steps); 0: none",
                         lo=0, hi=MAX_TOKENS)
    backend: str = backend_field("local", cli_default="ray")
    address: str = option("", "Ray cluster to join (default: RAY_ADDRESS or a private local Ray)",
                          metavar="HOST:PORT")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("batch", "prompt_len", "context_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(name, v, "a positive integer")
        if self.tokens < 0:
            raise ConfigError("tokens", self.tokens, "0 (no generate rows) or a positive integer")
        if not self.tps:
            raise ConfigError("tp", self.tps, "at least one TP degree")
        for ph in self.phases:
            if ph not in PHASES:
                raise ConfigError("phase", ph, ", ".join(PHASES))
        if "generate" in self.phases and self.tokens == 0:
            raise ConfigError("phase", "generate", "only with --tokens N (N >= 1)")
        for m in self.modes:
            if m not in MODE_NAMES:
                raise ConfigError("mode", m, ", ".join(MODE_NAMES))
        if self.backend not in ("ray", "local"):
            raise ConfigError("backend", self.backend, "ray or local")

    @property
    def row_phases(self) -> tuple[str, ...]:
        """Requested phases, plus ``generate`` when ``tokens`` is given."""
        extra = ("generate",) if self.tokens and "generate" not in self.phases else ()
        return tuple(p for p in PHASES if p in (*self.phases, *extra))


# ---- running one row ------------------------------------------------------------------
@dataclass
class _Acc:
    """Per-socket totals over the steps of a row."""

    end_ns: dict[int, int] = field(default_factory=dict)
    start_ns: dict[int, int] = field(default_factory=dict)
    breakdown: dict[int, dict[str, int]] = field(default_factory=dict)
    hbm_bytes: dict[int, int] = field(default_factory=dict)
    hidden_ns: dict[int, int] = field(default_factory=dict)

    def add(self, results: Mapping[int, ProgramResult], programs: Mapping[int, Program],
            hbm_bytes: Callable[[Program], int]) -> None:
        for s, r in results.items():
            self.start_ns.setdefault(s, r.start_ns)
            self.end_ns[s] = r.end_ns
            bd = self.breakdown.setdefault(s, dict.fromkeys(ROW_BREAKDOWN_KEYS, 0))
            for k, v in r.breakdown_ns.items():
                bd[_FOLD[k]] += v
            self.hbm_bytes[s] = self.hbm_bytes.get(s, 0) + hbm_bytes(programs[s])
            self.hidden_ns[s] = self.hidden_ns.get(s, 0) + r.hidden_ns

    def extend(self, later: _Acc) -> None:
        """Append the totals of steps run right after these on the same sockets."""
        for s, end in later.end_ns.items():
            self.start_ns.setdefault(s, later.start_ns[s])
            self.end_ns[s] = end
            bd = self.breakdown.setdefault(s, dict.fromkeys(ROW_BREAKDOWN_KEYS, 0))
            for k, v in later.breakdown[s].items():
                bd[k] += v
            self.hbm_bytes[s] = self.hbm_bytes.get(s, 0) + later.hbm_bytes.get(s, 0)
            self.hidden_ns[s] = self.hidden_ns.get(s, 0) + later.hidden_ns.get(s, 0)

    def add_host(self, host_ns: int) -> None:
        """Host time between steps: every socket waits for it, so it shifts every socket's end."""
        for s in self.end_ns:
            self.end_ns[s] += host_ns
            self.breakdown[s]["host"] += host_ns


class HbmBytes:
    """Bytes a program streams from HBM (streams plus SRAM spills), memoised per program."""

    def __init__(self, profile: NodeProfile) -> None:
        self.profile = profile
        self._memo: dict[int, tuple[Program, int]] = {}
        self._kernel: dict[int, tuple[KernelOp, int]] = {}

    def __call__(self, program: Program) -> int:
        hit = self._memo.get(id(program))
        if hit is not None and hit[0] is program:
            return hit[1]
        total = sum(self._kernel_bytes(op) for op in program.ops if isinstance(op, KernelOp))
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[id(program)] = (program, total)
        return total

    def _kernel_bytes(self, op: KernelOp) -> int:
        hit = self._kernel.get(id(op))
        if hit is not None and hit[0] is op:
            return hit[1]
        from sn40l_emu.socket_actor.socket_model import host_rate_per_socket
        from sn40l_emu.socket_actor.tile import kernel_cost

        p = self.profile
        spill = kernel_cost(op, p.socket, p.tile, p.launch, host_rate_per_socket(p)).spill_bytes
        total = sum(s.size_bytes for s in op.streams if s.tier is Tier.HBM) + 2 * spill
        if len(self._kernel) > 100_000:
            self._kernel.clear()
        self._kernel[id(op)] = (op, total)  # keeps the id alive
        return total


class Runner:
    """Runs rows on one node: power-cycle, then the row's steps through layer and step reuse."""

    def __init__(self, node: ManagedNode, book: ProgramBook) -> None:
        from sn40l_emu.engine.layer_reuse import LayerPrograms
        from sn40l_emu.engine.reuse import CostReuse

        self.node = node
        self.programs = LayerPrograms(book)
        self.hbm_bytes = HbmBytes(node.profile)
        self.reuse = CostReuse(self.node)  # keyed by the node's version: valid across power-cycles

    def fresh(self) -> None:
        self.node.reset()

    def run_steps(self, model: ModelConfig, plan: ShardPlan, steps: list[Step], mode: ExecMode,
                  fit: Fit, on_step: Callable[[], object] | None = None, *, fresh: bool = True) -> _Acc:
        """Run ``steps`` back to back (on a power-cycled node unless ``fresh=False``); per-socket totals."""
        if fresh:
            self.fresh()
        acc = _Acc()
        for step in steps:
            programs = self.programs.group(model, plan, step, mode, hbm_layers=fit.hbm_layers,
                                           spill=Placement(weights=fit.spill_tier))
            acc.add(self.reuse.run(programs), programs, self.hbm_bytes)
            if on_step is not None:
                on_step()
        return acc


def host_time(profile: NodeProfile, model: ModelConfig, phase: str, batch: int, prompt_len: int,
              tokens: int) -> HostTime:
    """The host runtime's share of a row (workload/host_runtime.py)."""
    if phase == "speculative":  # k draft steps and one verify step, one host round trip for the tokens
        return step_ns(profile).times(profile.runtime.spec_draft_len) + decode_step_ns(
            profile, model.vocab_size, batch)
    if phase == "prefill":
        return prefill_ns(profile, model.vocab_size, batch, prompt_len)
    if phase == "decode":
        return decode_step_ns(profile, model.vocab_size, batch)
    return generate_ns(profile, model.vocab_size, batch, prompt_len, tokens)


def row_from(acc: _Acc, *, profile: NodeProfile, model: ModelConfig, tp: int, phase: str,
             mode: ExecMode, batch: int, prompt_len: int, context_len: int, tokens_per_user: int,
             fit: Fit, host: HostTime | None = None, tokens_per_iteration: float | None = None) -> dict[str, Any]:
    """One JSON row from the totals of a run (critical path = the socket finishing last)."""
    crit = max(acc.end_ns, key=lambda s: (acc.end_ns[s], -s))
    start = min(acc.start_ns.values())
    latency = acc.end_ns[crit] - start
    bd = acc.breakdown[crit]
    if sum(bd.values()) != latency or acc.start_ns[crit] != start:
        raise AssertionError(f"breakdown {bd} does not add up to latency {latency} ns")
    peak = profile.socket.hbm_bw_bytes_per_s
    return {
        "platform": profile.name,
        "model": model.name,
        "tp": tp,
        "phase": phase,
        "mode": mode_name(mode),
        "batch": batch,
        "prompt_len": prompt_len,
        "context_len": context_len,
        "latency_ns": latency,
        "tokens_per_s_per_user": (tokens_per_user if tokens_per_iteration is None else tokens_per_iteration)
        * 1e9 / latency if latency else 0.0,
        "breakdown_ns": dict(bd),
        "collectives_hidden_ns": acc.hidden_ns.get(crit, 0),
        "host_ns": host.by_name() if host is not None else {},
        "hbm_bw_utilization": acc.hbm_bytes[crit] * 1e9 / (latency * peak) if latency else 0.0,
        "critical_socket": crit,
        "spilled_layers": fit.spilled_layers,
        "spill_tier": fit.spill_tier.value if fit.spilled_layers else None,
    }


# ---- the sweep ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Point:
    tp: int
    phase: str
    mode: ExecMode


def plan_points(cfg: ScalingConfig, profile: NodeProfile, model: ModelConfig) -> list[_Point]:
    """Every row to run, in output order; raises ConfigError if a TP degree cannot split the model."""
    from sn40l_emu.config import Platform
    from sn40l_emu.workload import make_plan

    for tp in cfg.tps:
        try:
            make_plan(model, tp)
        except ShardingError as exc:
            raise ConfigError("tp", tp, f"a degree that splits {model.name} ({exc})") from None
    if profile.platform is Platform.GPU:
        modes: tuple[ExecMode, ...] = (ExecMode.GPU,)
    else:
        modes = tuple(dict.fromkeys(MODE_NAMES[m] for m in cfg.modes if MODE_NAMES[m] is not ExecMode.GPU))
        if not modes:
            raise ConfigError("mode", ",".join(cfg.modes), "unfused, fused-so or fused-ho on an SN40L profile")
    return [_Point(tp, ph, m) for tp in cfg.tps for ph in cfg.row_phases for m in modes]


def _steps(cfg: ScalingConfig, phase: str) -> tuple[list[Step], int, int, int]:
    """(steps, context_len reported, tokens per user, prompt_len reported) of a phase.

    ``speculative``: the target's verify step (the draft steps run before it, see run_scaling).
    """
    if phase == "speculative":
        return [verify_step(cfg.batch, cfg.context_len, _DRAFT_LEN[0])], cfg.context_len, 1, cfg.prompt_len
    if phase == "prefill":
        return [Step.prefill(cfg.batch, cfg.prompt_len)], 0, cfg.prompt_len, cfg.prompt_len
    if phase == "decode":
        return [Step.decode(cfg.batch, cfg.context_len)], cfg.context_len, 1, cfg.prompt_len
    steps = [Step.prefill(cfg.batch, cfg.prompt_len)]
    steps += [Step.decode(cfg.batch, cfg.prompt_len + i) for i in range(cfg.tokens - 1)]
    return steps, cfg.prompt_len + cfg.tokens - 1, cfg.tokens, cfg.prompt_len


_DRAFT_LEN = [1]  # the profile's draft length, set by run_scaling before _steps is asked


@contextmanager
def _nodes(cfg: ScalingConfig, profile: NodeProfile, n_sockets: int) -> Iterator[ManagedNode]:
    from sn40l_emu.cluster.session import Backend, open_node

    with open_node(profile, backend=Backend(cfg.backend), address=cfg.address, n_sockets=n_sockets,
                   trace=False) as node:
        yield node


def run_scaling(cfg: ScalingConfig, *, progress: bool = False,
                node_factory: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """Run every row of ``cfg``; returns JSON-able rows (see the module docstring).

    ``node_factory(n_sockets)`` may supply a context manager yielding a node
    (tests); by default :func:`open_node` on ``cfg.backend``.
    """
    from tqdm import tqdm

    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.workload import load_model, make_plan

    profile = load_profile(cfg.profile, list(cfg.overrides))
    model = load_model(cfg.model)
    points = plan_points(cfg, profile, model)
    rt = profile.runtime
    draft = None
    if "speculative" in cfg.row_phases:
        if not rt.spec_draft_model:
            raise ConfigError("runtime.spec_draft_model", "", "a shipped model name (--set runtime.spec_draft_model="
                              "llama3.1-8b) for --phase speculative")
        draft = load_model(rt.spec_draft_model)
        _DRAFT_LEN[0] = rt.spec_draft_len
    max_ctx = max(cfg.prompt_len, cfg.context_len + 1,
                  cfg.prompt_len + cfg.tokens - 1 if cfg.tokens else 0)
    fits = {tp: fit_in_hbm(profile, make_plan(model, tp), cfg.batch, max_ctx, cfg.prompt_len)
            for tp in cfg.tps}
    steps_total = sum(len(_steps(cfg, p.phase)[0]) for p in points)
    n_sockets = max(profile.sockets, *cfg.tps)
    rows: list[dict[str, Any]] = []
    factory = node_factory or (lambda n: _nodes(cfg, profile, n))
    with tqdm(total=steps_total, disable=None if progress else True, desc=f"tp-scaling {model.name}",
              unit="step", leave=False) as bar, factory(n_sockets) as node:
        runner = Runner(node, ProgramBook())
        for p in points:
            bar.set_postfix_str(f"tp{p.tp} {p.phase} {mode_name(p.mode)}")
            plan = make_plan(model, p.tp)
            steps, ctx, tok, prompt = _steps(cfg, p.phase)
            per_iteration = None
            if p.phase == "speculative":
                assert draft is not None
                dplan = make_plan(draft, p.tp)
                dfit = fit_in_hbm(profile, dplan, cfg.batch, max_ctx + rt.spec_draft_len, cfg.prompt_len)
                acc = runner.run_steps(draft, dplan, draft_steps(cfg.batch, cfg.context_len, rt.spec_draft_len),
                                       p.mode, dfit)
                acc.extend(runner.run_steps(model, plan, steps, p.mode, fits[p.tp], lambda: bar.update(1),
                                            fresh=False))
                per_iteration = expected_tokens(rt.spec_acceptance, rt.spec_draft_len)
            else:
                acc = runner.run_steps(model, plan, steps, p.mode, fits[p.tp], lambda: bar.update(1))
            host = host_time(profile, model, p.phase, cfg.batch, cfg.prompt_len, cfg.tokens)
            acc.add_host(host.total_ns)
            rows.append(row_from(acc, profile=profile, model=model, tp=p.tp, phase=p.phase, mode=p.mode,
                                 batch=cfg.batch, prompt_len=prompt, context_len=ctx, tokens_per_user=tok,
                                 fit=fits[p.tp], host=host, tokens_per_iteration=per_iteration))
    return rows


# ---- output ---------------------------------------------------------------------------
_COLUMNS = (
    ("platform", "platform"), ("tp", "tp"), ("phase", "phase"), ("mode", "mode"),
    ("latency", "latency us"), ("per_token", "us/token"), ("tps", "tok/s/user"),
    ("compute", "compute"), ("weights", "weights"), ("kv", "kv"), ("collectives", "coll"),
    ("launch", "launch"), ("host", "host"), ("other", "other"), ("hidden", "coll hidden us"), ("hbm", "HBM util"),
    ("spill", "spill"),
)


def table_text(rows: list[dict[str, Any]]) -> str:
    """The rows as a terminal table; breakdown terms in % of the latency."""
    from sn40l_emu.report import table

    def us(ns: float) -> str:
        return f"{ns / 1e3:,.1f}"

    cells = []
    for r in rows:
        lat = r["latency_ns"]
        c = {k: r[k] for k in ("platform", "tp", "phase", "mode")}
        c.update(latency=us(lat), per_token=us(per_token_ns(r)),
                 hidden=us(r.get("collectives_hidden_ns", 0)), tps=f"{r['tokens_per_s_per_user']:,.1f}",
                 hbm=f"{100 * r['hbm_bw_utilization']:.1f}%",
                 spill=f"{r['spilled_layers']}L->{r['spill_tier']}" if r["spilled_layers"] else "")
        for k in ROW_BREAKDOWN_KEYS:
            c[k] = f"{100 * r['breakdown_ns'][k] / lat:.1f}%" if lat else "-"
        cells.append(c)
    return table(cells, _COLUMNS)


def resolved_config(cfg: ScalingConfig) -> dict[str, Any]:
    from sn40l_emu.config import load_profile
    from sn40l_emu.workload import load_model

    model = load_model(cfg.model)
    return {"args": asdict(cfg), "profile": load_profile(cfg.profile, list(cfg.overrides)).to_json(),
            "model": asdict(model)}


def config_from_args(args: argparse.Namespace) -> ScalingConfig:
    from sn40l_emu.experiments.options import from_args

    cfg: ScalingConfig = from_args(ScalingConfig, args)
    return cfg


def cmd_tp_scaling(args: argparse.Namespace) -> int:
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.plots_tp import plot_scaling

    cfg = config_from_args(args)
    config_path = Path(args.json).with_name(Path(args.json).stem + ".config.json") if args.json else None
    resolved = resolved_config(cfg)
    run = rundir.prepare("tp-scaling", resolved, out=args.out, overwrite=args.overwrite, json_path=args.json,
                         extra_paths=[("--json", config_path)], argv=getattr(args, "argv", None))
    t0 = time.perf_counter()  # wall-clock ok: measures the emulator itself
    rows = run_scaling(cfg, progress=not args.no_progress)
    wall_s = time.perf_counter() - t0  # wall-clock ok: measures the emulator itself
    text = table_text(rows)
    print(text)
    doc = {"rows": rows}
    run.write_json("results.json", doc)
    run.write_rows("results", rows)
    run.write_json("config.json", {**resolved, "wall_s": round(wall_s, 3)})
    png = plot_scaling(rows, run.path)
    run.file(Path(png).name)
    if args.json and config_path is not None:
        rundir.write_copy(args.json, doc)
        rundir.write_copy(config_path, {**resolved, "wall_s": round(wall_s, 3)})
    run.finish(f"```\n{text}\n```\n\nPlot: `{Path(png).name}`", rows=len(rows))
    extra = f", {args.json} and {config_path}" if args.json else ""
    print(f"\nwrote {run.path}/ (results.json, results.csv, config.json, {Path(png).name}){extra} ({wall_s:.1f} s)")
    return 0


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    p = sub.add_parser("tp-scaling", help="prefill/decode latency vs tensor-parallel degree, per execution mode",
                       description="Latency of one model's prefill, decode and whole generation vs the TP "
                                   "degree, per execution mode, with the critical path broken down into "
                                   "compute, weights, KV cache, collectives and launches.")
    add_options(p, ScalingConfig)
    output_args(p, "also write the rows JSON here (and the resolved config as NAME.config.json beside it)")
    p.set_defaults(func=cmd_tp_scaling)
