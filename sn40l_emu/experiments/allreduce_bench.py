"""`sn40l-emu allreduce-bench`: nccl-tests' ``all_reduce_perf`` for the emulated node.

Every size runs as a real collective through the node: each socket of the
group (sockets ``0..N-1``) runs a one-op :class:`Program` whose
:class:`CollectiveOp` reduces a tensor loaded into its store, over the P2P
layer of the backend (Ray actors by default, or in-process). Before every
call the group's clocks are aligned to the latest clock (and to the time its
links are idle again), so every call starts at one virtual time ``t0``:

* time  = max over the group of (the socket's end - t0), in us of virtual time;
* algbw = S / time, busbw = algbw * 2(n-1)/n (the nccl-tests definitions for
  all-reduce; busbw is what each link of a ring would have to carry);
* #wrong = elements (over all sockets) outside the tolerance of a numpy
  reference, with ``--check``; wall = host wall time per call (us).

Data: seeded standard-normal values per socket, rounded to the dtype. The
reference sums them in float64; the tolerance per element is
``n * eps(dtype) * sum_i |x_i|`` for sum (float16/bfloat16 accumulate in
float32 and round once per hop on a ring: see
:mod:`sn40l_emu.collectives.reduction`), exact equality for max and min.

``--algo auto`` lets the selector choose per size (the ``algo``/``chunks``
columns show its choice). On the default full mesh it picks one-shot at every
size: each socket has 7 independent links, so sending the whole buffer to all
7 peers at once takes ~S/B, while a ring moves 2(n-1)/n * S = 1.75 S over a
single outgoing link (~1.75 S/B) and a tree pays log2(n) latency steps plus
the ring's volume. One-shot's busbw therefore exceeds the link rate (~1.75x
at large sizes): busbw is defined for ring-like traffic. Use ``--algo ring``
to see a single link's bandwidth.

On a GPU profile (``nccl.enabled``) NCCL's tuning model times each call
(:mod:`sn40l_emu.collectives.nccl`) and the ``algo`` column shows its pick as
algorithm/protocol (``ring/LL128``, ``nvls/Simple``): ``--algo auto`` is NCCL's
own choice, ``ring`` and ``nvls`` restrict it as ``NCCL_ALGO`` does (``nvls``
only where the profile has NVLink SHARP, e.g. dgx-h100); ``oneshot`` and
``tree`` are refused there (``--set nccl.enabled=0`` for the P2P model).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.options import (
    MAX_SEED,
    backend_field,
    check_fields,
    option,
    overrides_field,
    profile_field,
)
from sn40l_emu.program import Algo, CollectiveKind, ReduceOp

DTYPES = ("float32", "float16", "bfloat16")
MAX_SIZE_BYTES = 1 << 50  # 1 PiB (1,125,899,906,842,624 B): a sanity limit on -b/-e (timing-only runs are symbolic)
BUFFER = "allreduce_bench"


def _size(text: str) -> int:
    from sn40l_emu.units import parse_size_bytes

    return parse_size_bytes(text)


@dataclass(frozen=True)
class BenchConfig:
    """An nccl-tests-style sweep (sizes min, min*f, ... max) and the node it runs on."""

    min_bytes: int = option(8, "smallest size (B; K/M/G suffixes are binary)", flag="minbytes", short=("-b",),
                            lo=1, hi=MAX_SIZE_BYTES, parse=_size, unit="B", metavar="SIZE")
    max_bytes: int = option(64 * 1024**2, "largest size (B; K/M/G suffixes are binary)", flag="maxbytes",
                            short=("-e",), lo=1, hi=MAX_SIZE_BYTES, parse=_size, unit="B", metavar="SIZE",
                            shown="64M")
    step_factor: int = option(2, "multiply the size by this between rows", flag="stepfactor", short=("-f",),
                              lo=2, hi=1 << 20)
    algo: Algo = option(Algo.AUTO, "collective algorithm; auto = the selector's choice per size "
                                   "(one-shot on a full mesh; NCCL's own choice on a GPU profile); "
                                   "nvls: NVLink SHARP (GPU profiles with NVLS, e.g. dgx-h100)")
    chunks: int = option(0, "chunks per frame / ring segment (0 = tuned)", lo=0, hi=1 << 16)
    sockets: int = option(8, "group = sockets 0..N-1 of the node (0 = all of the node's sockets)",
                          lo=0, hi=1024, cli_default=0)
    dtype: str = option("float32", "element type", choices=DTYPES)
    op: ReduceOp = option(ReduceOp.SUM, "reduction")
    check: bool = option(True, "compare every socket's result with numpy (off with --timing-only)")
    timing_only: bool = option(False, "symbolic payloads (shapes only): sizes far beyond this host's memory, "
                                      "e.g. -e 16G")
    iters: int = option(3, "timed calls per size", short=("-n",), lo=1, hi=1_000_000)
    warmup: int = option(1, "untimed calls per size first", short=("-w",), lo=0, hi=1_000_000)
    seed: int = option(0, "seed of the input data", lo=0, hi=MAX_SEED)
    profile: str = profile_field("sn40l")
    overrides: tuple[str, ...] = overrides_field()
    backend: str = backend_field()
    address: str = option("", "Ray cluster to join (default: RAY_ADDRESS or a private local Ray)",
                          metavar="HOST:PORT")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def kind(self) -> CollectiveKind:
        """The collective this sweep runs."""
        return CollectiveKind.ALL_REDUCE

    def check_profile(self, profile: Any) -> None:
        """Raise ConfigError if ``--algo`` cannot run on ``profile`` (nvls needs NVLS; where NCCL
        times the collective, oneshot and tree do not exist)."""
        from sn40l_emu.collectives.nccl import check_algo

        check_algo(profile.nccl, self.kind, self.algo)

    def validate(self, n_node_sockets: int) -> None:
        if self.min_bytes < 1 or self.max_bytes < self.min_bytes:
            raise ConfigError("-b/-e", f"{self.min_bytes}..{self.max_bytes}", "1 <= minbytes <= maxbytes")
        if self.step_factor < 2:
            raise ConfigError("-f", self.step_factor, "an integer factor >= 2")
        if not 1 <= self.sockets <= n_node_sockets:
            raise ConfigError("--sockets", self.sockets, f"1..{n_node_sockets} (the node's sockets)")
        if self.dtype not in DTYPES:
            raise ConfigError("--dtype", self.dtype, ", ".join(DTYPES))
        if self.chunks < 0:
            raise ConfigError("--chunks", self.chunks, "0 (tuned) or a positive chunk count")
        if self.iters < 1 or self.warmup < 0:
            raise ConfigError("-n/-w", f"{self.iters}/{self.warmup}", "iters >= 1, warmup >= 0")


@dataclass(frozen=True)
class Row:
    size_bytes: int
    count: int
    dtype: str
    algo: str  # the algorithm that ran (the selector's choice for auto; NCCL's algo/protocol on GPU profiles)
    chunks: int
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None  # None: not checked
    wall_us: float


def sizes_bytes(min_bytes: int, max_bytes: int, factor: int) -> list[int]:
    """nccl-tests' sweep: min, min*f, ... up to max."""
    out, size = [], min_bytes
    while size <= max_bytes:
        out.append(size)
        size *= factor
    return out


def bus_factor(n: int) -> float:
    """busbw / algbw for all-reduce (nccl-tests PERFORMANCE.md): 2(n-1)/n."""
    return 2 * (n - 1) / n if n > 0 else 0.0


def chosen_algo(cfg: BenchConfig, size_bytes: int, profile: Any, n_node_sockets: int) -> tuple[Algo, int]:
    """The (algorithm, chunks) a call of this size runs with, as the collective resolves it:
    the selector for auto, else the profile's ring chunks or the tuner's best for ``chunks=0``."""
    from sn40l_emu.collectives.selector import best_chunks, select_algo
    from sn40l_emu.fabric.topology import make_topology

    params = profile.p2p.params()
    topo = make_topology(params.topology, n_node_sockets)
    group = tuple(range(cfg.sockets))
    kind = CollectiveKind.ALL_REDUCE
    if nccl_times(profile, cfg.sockets):
        return cfg.algo, 0  # shown by nccl_label instead
    if cfg.sockets == 1:
        return (cfg.algo, max(cfg.chunks, 1))
    if cfg.algo is Algo.AUTO:
        algo, k = select_algo(kind, size_bytes, group, topo, params)
        return algo, cfg.chunks or k
    if cfg.chunks:
        return cfg.algo, cfg.chunks
    if cfg.algo is Algo.RING and params.default_chunks > 0:
        return cfg.algo, params.default_chunks
    return cfg.algo, best_chunks(kind, cfg.algo, size_bytes, group, topo, params)[0]


def nccl_times(profile: Any, sockets: int) -> bool:
    """Whether NCCL's model times an all-reduce on sockets 0..sockets-1 (enabled, 2+ ranks, one node)."""
    return bool(profile.nccl.enabled) and 2 <= sockets <= profile.sockets


def nccl_label(cfg: BenchConfig, kind: CollectiveKind, size_bytes: int, profile: Any) -> str:
    """NCCL's pick as ``algo/protocol`` (e.g. ``ring/LL128``, ``nvls/Simple``), as NCCL_DEBUG_SUBSYS=TUNING
    would name it; "" if NCCL's model does not time this call."""
    from sn40l_emu.collectives.nccl import nccl_choice

    c = nccl_choice(profile.nccl, kind, cfg.sockets, size_bytes, cfg.algo)
    return "" if c is None else f"{c.algo}/{c.proto.value}"


def _inputs(cfg: BenchConfig, count: int) -> dict[int, np.ndarray]:
    from sn40l_emu.program import np_dtype

    dt = np_dtype(cfg.dtype)
    return {s: np.random.default_rng(cfg.seed + s).standard_normal(count, dtype=np.float32).astype(dt)
            for s in range(cfg.sockets)}


def count_wrong(got: np.ndarray, inputs: list[np.ndarray], op: ReduceOp, dtype: str) -> int:
    """Elements of ``got`` outside the documented tolerance of the float64 reference."""
    from sn40l_emu.program import np_dtype

    xs = [x.astype(np.float64) for x in inputs]
    g = np.asarray(got).reshape(-1).astype(np.float64)
    if op is ReduceOp.SUM:
        ref = np.sum(xs, axis=0)
        eps = float(np.finfo(np_dtype(dtype)).eps) if dtype != "bfloat16" else 2.0**-7
        tol = len(xs) * eps * np.sum(np.abs(xs), axis=0)
        ok = np.abs(g - ref) <= tol
    else:
        ref = np.max(xs, axis=0) if op is ReduceOp.MAX else np.min(xs, axis=0)
        ok = g == ref
    return int(g.size - np.count_nonzero(ok))


def _align(node: Any, group: tuple[int, ...], busy_ns: int) -> int:
    """Move the group's clocks to one start time at which its links are idle; returns it."""
    clocks = node.clocks()
    t0 = max(max(clocks[s] for s in group), busy_ns)
    node.advance_clocks({s: t0 for s in group})
    return t0


def run_bench(node: Any, cfg: BenchConfig) -> Iterator[Row]:
    """Yield one row per size (runs as the rows are consumed)."""
    from sn40l_emu.program import CollectiveKind, CollectiveOp, Program, np_dtype

    cfg.validate(node.n_sockets)
    cfg.check_profile(node.profile)
    nccl = nccl_times(node.profile, cfg.sockets)
    group = tuple(range(cfg.sockets))
    itemsize = np_dtype(cfg.dtype).itemsize
    real = not cfg.timing_only
    busy_ns = 0
    for size in sizes_bytes(cfg.min_bytes, cfg.max_bytes, cfg.step_factor):
        count = max(1, size // itemsize)
        nbytes = count * itemsize
        op = CollectiveOp(f"allreduce-{nbytes}B", CollectiveKind.ALL_REDUCE, group, (count,), cfg.dtype,
                          op=cfg.op, algo=cfg.algo, chunks=cfg.chunks, buffer=BUFFER if real else "")
        programs = {s: Program.of(f"allreduce-bench {nbytes} B", [op]) for s in group}
        inputs = _inputs(cfg, count) if real else {}
        if real:
            node.load_tensors({s: {BUFFER: inputs[s]} for s in group})
        times_ns: list[int] = []
        walls_s: list[float] = []
        total = cfg.warmup + cfg.iters
        for it in range(total):
            if real and cfg.check and it == total - 1 and it > 0:
                node.load_tensors({s: {BUFFER: inputs[s]} for s in group})  # the checked call
            t0 = _align(node, group, busy_ns)
            began = time.perf_counter()  # wall-clock ok: the bench reports host wall time
            results = node.run_programs(programs)
            wall = time.perf_counter() - began  # wall-clock ok
            busy_ns = max(max(r.end_ns, r.link_free_ns) for r in results.values())
            if it >= cfg.warmup:
                times_ns.append(max(r.end_ns for r in results.values()) - t0)
                walls_s.append(wall)
        wrong: int | None = None
        if real and cfg.check:
            parts = [inputs[s] for s in group]
            wrong = sum(count_wrong(node.get_tensors(s, [BUFFER])[BUFFER], parts, cfg.op, cfg.dtype)
                        for s in group)
        if real:
            node.load_tensors({s: {BUFFER: np.zeros(0, np_dtype(cfg.dtype))} for s in group})  # free it
        t_ns = sorted(times_ns)[len(times_ns) // 2]
        algo, chunks = chosen_algo(cfg, nbytes, node.profile, node.n_sockets)
        label = nccl_label(cfg, CollectiveKind.ALL_REDUCE, nbytes, node.profile) if nccl else algo.value
        algbw = nbytes / t_ns if t_ns > 0 else 0.0  # B/ns == GB/s
        yield Row(nbytes, count, cfg.dtype, label, chunks, t_ns / 1e3, algbw,
                  algbw * bus_factor(cfg.sockets), wrong, 1e6 * sum(walls_s) / len(walls_s))


HEADER = (f"#{'size':>12} {'count':>12} {'type':>9} {'redop':>6} {'algo':>8} {'chunks':>6} "
          f"{'time':>10} {'algbw':>8} {'busbw':>8} {'#wrong':>7} {'wall':>10}\n"
          f"#{'(B)':>12} {'(elements)':>12} {'':>9} {'':>6} {'':>8} {'':>6} "
          f"{'(us)':>10} {'(GB/s)':>8} {'(GB/s)':>8} {'':>7} {'(us)':>10}")


def format_row(row: Row, op: ReduceOp) -> str:
    wrong = "N/A" if row.wrong is None else str(row.wrong)
    return (f" {row.size_bytes:>12d} {row.count:>12d} {row.dtype:>9} {op.value:>6} {row.algo:>8} "
            f"{row.chunks:>6d} {row.time_us:>10.2f} {row.algbw_gbps:>8.2f} {row.busbw_gbps:>8.2f} "
            f"{wrong:>7} {row.wall_us:>10.0f}")


def summary_lines(wrong: int | None, busbw_gbps: list[float]) -> list[str]:
    """nccl-tests' closing lines; ``wrong`` None = nothing was checked, said so (never "0 OK")."""
    if wrong is None:
        oob = "# Out of bounds values : N/A (not checked: --timing-only or --no-check)"
    else:
        oob = f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}"
    avg = sum(busbw_gbps) / max(1, len(busbw_gbps))
    return [oob, f"# Avg bus bandwidth    : {avg:.4g} GB/s"]


def _preamble(cfg: BenchConfig, profile: Any, backend: str) -> list[str]:
    p = profile.p2p
    lines = [
        f"# sn40l-emu allreduce-bench: group = sockets 0..{cfg.sockets - 1}, profile {profile.name}, "
        f"backend {backend}",
        f"# topology {p.topology.value}, link {p.link_bw_bytes_per_s / 1e9:g} GB/s per direction, "
        f"latency {p.link_latency_ns / 1e3:g} us, chunk overhead {p.chunk_overhead_ns} ns",
        f"# algo {cfg.algo.value}, chunks {cfg.chunks or 'tuned'}, dtype {cfg.dtype}, op {cfg.op.value}, "
        f"{'timing only (symbolic payloads)' if cfg.timing_only else 'real data'}, "
        f"check {'on' if cfg.check and not cfg.timing_only else 'off'}, iters {cfg.iters}, warmup {cfg.warmup}",
        "# time: virtual time from a common start to the last socket's result (median of iters);",
        "# busbw = algbw * 2(n-1)/n; wall: host wall time per call (mean)",
    ]
    if nccl_times(profile, cfg.sockets):
        lines.append(f"# NCCL's tuning model times every call (collectives/nccl.py; algo {cfg.algo.value}: "
                     f"{'NCCL chooses' if cfg.algo is Algo.AUTO else 'NCCL_ALGO=' + cfg.algo.value.upper()}); "
                     f"algo column = algorithm/protocol, chunks 0; bw_efficiency {profile.nccl.bw_efficiency:g}")
    elif cfg.algo is Algo.AUTO and p.topology.value == "full_mesh":
        lines.append("# auto on a full mesh: one-shot at every size (7 links per socket carry S each at once, "
                     "~S/B, vs ~1.75 S/B for a ring), so its busbw exceeds the link rate")
    return lines


def resolve(cfg: BenchConfig) -> tuple[BenchConfig, Any]:
    """(the config with ``sockets`` 0 resolved to the node's and ``check`` off for timing-only, its profile)."""
    from dataclasses import replace

    from sn40l_emu.config import load_profile

    profile = load_profile(cfg.profile, list(cfg.overrides))
    cfg = replace(cfg, sockets=cfg.sockets or profile.sockets, check=cfg.check and not cfg.timing_only)
    cfg.validate(profile.sockets)
    cfg.check_profile(profile)
    if not cfg.timing_only:
        need = 3 * cfg.sockets * cfg.max_bytes
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if need > phys // 2:
            raise ConfigError("-e", cfg.max_bytes, f"real data of {cfg.sockets} x {cfg.max_bytes} B does not fit "
                              "this host; use --timing-only for sizes beyond memory")
    return cfg, profile


def run_bench_config(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Every size of ``cfg`` on a node of its own; rows as dicts (for the API and experiment files)."""
    from sn40l_emu.cluster.session import Backend, open_node

    cfg, profile = resolve(cfg)
    with open_node(profile, backend=Backend(cfg.backend), address=cfg.address, trace=False) as node:
        return [asdict(r) for r in run_bench(node, cfg)]


def cmd_allreduce_bench(args: argparse.Namespace) -> int:
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args

    cfg, profile = resolve(from_args(BenchConfig, args))
    cfg_json = {**asdict(cfg), "algo": cfg.algo.value, "op": cfg.op.value, "overrides": list(cfg.overrides)}
    run = rundir.prepare("allreduce-bench", {"bench": cfg_json, "profile_resolved": profile.to_json()},
                         out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    rows: list[Row] = []
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    with open_node(profile, backend=Backend(cfg.backend), address=cfg.address, trace=False) as node:
        for line in _preamble(cfg, profile, cfg.backend):
            say(line)
        say(HEADER)
        for row in run_bench(node, cfg):
            rows.append(row)
            say(format_row(row, cfg.op))
    checked = any(r.wrong is not None for r in rows)
    wrong = sum(r.wrong or 0 for r in rows)
    for line in summary_lines(wrong if checked else None, [r.busbw_gbps for r in rows]):
        say(line)
    doc = {"config": cfg_json, "rows": [asdict(r) for r in rows]}
    run.write_json("results.json", doc)
    run.write_rows("results", [asdict(r) for r in rows])
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish("```\n" + "\n".join(lines) + "\n```", rows=len(rows))
    print(f"# wrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0 if wrong == 0 else 1


def register(sub: Any) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    body = (__doc__ or "").split("\n\n", 1)[-1]
    p = sub.add_parser("allreduce-bench", help="all-reduce bandwidth sweep, shaped like nccl-tests all_reduce_perf",
                       description=re.sub(r":\w+:`([^`]+)`", r"\1", body).replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, BenchConfig)
    output_args(p, "also write {config, rows} here")
    p.set_defaults(func=cmd_allreduce_bench)
