"""nccl-tests' ``*_perf`` for every collective of the emulated node: out-of-place and in-place.

`sn40l-emu coll-bench --coll NAME` (and the aliases `allgather-bench`,
`reducescatter-bench`, `broadcast-bench`) sweeps sizes like nccl-tests
(``-b``, ``-e``, ``-f``) and prints its columns::

    size count type redop root | time algbw busbw #wrong (out-of-place) | time algbw busbw #wrong (in-place)

Sizes and counts follow nccl-tests (``src/<coll>.cu``, ``*GetCollByteCount``):
``size`` is the larger of the send and receive buffers of one rank, ``count`` the
elements the call is given (all-gather: each rank's part; reduce-scatter: each
rank's result; all-reduce and broadcast: the whole buffer). Bandwidths follow
nccl-tests' PERFORMANCE.md: algbw = bytes / time with bytes = ``size``, and

    busbw = algbw x 2(n-1)/n (all-reduce), (n-1)/n (all-gather, reduce-scatter), 1 (broadcast).

Every call is a real collective through the node (one one-op :class:`Program` per
socket); ``time`` is virtual time from a common start to the last socket's result
(median of ``-n`` calls). Out-of-place calls read ``in`` and write ``out`` (the
input stays intact, and a changed input counts as wrong); in-place calls read and
write one buffer. The emulator charges no time for where the result lands, so the
two columns differ only if the fabric's state does.

``#wrong`` counts elements (over all sockets) outside the tolerance of a float64
numpy reference (sums: ``n * eps * sum |x|``; max, min, gathers and broadcasts:
exact). It reads ``N/A`` when nothing was checked (``--timing-only`` or
``--no-check``), as in nccl-tests with ``-c 0``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.allreduce_bench import (
    BenchConfig,
    count_wrong,
    sizes_bytes,
    summary_lines,
)
from sn40l_emu.experiments.options import option
from sn40l_emu.program import CollectiveKind, ReduceOp

IN_BUFFER = "coll_bench_in"
OUT_BUFFER = "coll_bench_out"


@dataclass(frozen=True)
class CollSpec:
    """One collective as nccl-tests benchmarks it."""

    name: str  # nccl-tests' binary, e.g. all_gather_perf
    kind: CollectiveKind
    reduces: bool  # has a reduction op (the redop column)
    rooted: bool  # has a root (the root column)
    bus_factor: Callable[[int], float]


COLLS: dict[str, CollSpec] = {
    "allreduce": CollSpec("all_reduce_perf", CollectiveKind.ALL_REDUCE, True, False,
                          lambda n: 2 * (n - 1) / n),
    "allgather": CollSpec("all_gather_perf", CollectiveKind.ALL_GATHER, False, False, lambda n: (n - 1) / n),
    "reducescatter": CollSpec("reduce_scatter_perf", CollectiveKind.REDUCE_SCATTER, True, False,
                              lambda n: (n - 1) / n),
    "broadcast": CollSpec("broadcast_perf", CollectiveKind.BROADCAST, False, True, lambda n: 1.0),
}


def bus_factor(coll: str, n: int) -> float:
    """busbw / algbw for ``coll`` over ``n`` ranks (nccl-tests PERFORMANCE.md)."""
    return COLLS[coll].bus_factor(n) if n > 0 else 0.0


@dataclass(frozen=True)
class Counts:
    """Element counts of one call on each rank, the nccl-tests way (``*GetCollByteCount``)."""

    send: int  # elements each rank sends (its input)
    recv: int  # elements each rank receives (its result)
    param: int  # the count the call is given: the ``count`` column


def counts(coll: str, size_bytes: int, itemsize: int, n: int) -> Counts:
    """Counts for a requested size: the total is rounded down to whole elements (and ranks)."""
    total = max(1, size_bytes // itemsize)
    if coll == "allgather":
        part = max(1, total // n)
        return Counts(part, part * n, part)
    if coll == "reducescatter":
        part = max(1, total // n)
        return Counts(part * n, part, part)
    return Counts(total, total, total)


@dataclass(frozen=True)
class CollBenchConfig(BenchConfig):
    """An nccl-tests-style sweep of one collective: all-reduce-bench's options plus which collective and root."""

    coll: str = option("allgather", "the collective", choices=tuple(COLLS))
    root: int = option(0, "broadcast root socket", lo=0, hi=1023)

    @property
    def kind(self) -> CollectiveKind:
        return COLLS[self.coll].kind

    def validate(self, n_node_sockets: int) -> None:
        if self.coll not in COLLS:
            raise ConfigError("--coll", self.coll, ", ".join(COLLS))
        super().validate(n_node_sockets)
        if not 0 <= self.root < self.sockets:
            raise ConfigError("--root", self.root, f"0..{self.sockets - 1} (a socket of the group)")

    @property
    def checked(self) -> bool:
        return self.check and not self.timing_only


@dataclass(frozen=True)
class Result:
    """One column group: out-of-place or in-place."""

    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None  # None: not checked ("N/A")
    wall_us: float


@dataclass(frozen=True)
class CollRow:
    size_bytes: int
    count: int
    dtype: str
    redop: str  # "none" for collectives without a reduction, as nccl-tests prints
    root: int  # -1 for collectives without a root
    out_of_place: Result
    in_place: Result


def _inputs(cfg: CollBenchConfig, c: Counts) -> dict[int, np.ndarray]:
    from sn40l_emu.program import np_dtype

    dt = np_dtype(cfg.dtype)
    return {s: np.random.default_rng(cfg.seed + s).standard_normal(c.send, dtype=np.float32).astype(dt)
            for s in range(cfg.sockets)}


def expected(coll: str, inputs: list[np.ndarray], rank: int, op: ReduceOp, root: int) -> np.ndarray:
    """What rank ``rank`` must hold afterwards (float64 for reductions)."""
    xs = [x.astype(np.float64) for x in inputs]
    if coll == "allgather":
        return np.concatenate(xs)
    if coll == "broadcast":
        return xs[root]
    stacked = np.stack(xs)
    red = stacked.sum(axis=0) if op is ReduceOp.SUM else (
        stacked.max(axis=0) if op is ReduceOp.MAX else stacked.min(axis=0))
    if coll == "reducescatter":
        return np.array_split(red, len(xs))[rank]
    return red


def wrong_elements(coll: str, got: np.ndarray, inputs: list[np.ndarray], rank: int, op: ReduceOp,
                   dtype: str, root: int) -> int:
    """Elements of ``got`` outside the tolerance (reductions) or not equal (data movement)."""
    g = np.asarray(got).reshape(-1)
    if coll in ("allreduce", "reducescatter"):
        if coll == "allreduce":
            return count_wrong(g, inputs, op, dtype)
        parts = [np.array_split(x.reshape(-1), len(inputs))[rank] for x in inputs]
        return count_wrong(g, parts, op, dtype)
    ref = expected(coll, inputs, rank, op, root)
    if g.size != ref.size:
        return int(max(g.size, ref.size))
    return int(g.size - np.count_nonzero(g.astype(np.float64) == ref))


def _align(node: Any, group: tuple[int, ...], busy_ns: int) -> int:
    clocks = node.clocks()
    t0 = max(max(clocks[s] for s in group), busy_ns)
    node.advance_clocks({s: t0 for s in group})
    return t0


def _run_one(node: Any, cfg: CollBenchConfig, c: Counts, nbytes: int, in_place: bool,
             inputs: dict[int, np.ndarray], busy_ns: int) -> tuple[Result, int]:
    """Warm-up and timed calls of one column; returns its result and when the links are idle."""
    from sn40l_emu.program import CollectiveOp, Program

    spec = COLLS[cfg.coll]
    group = tuple(range(cfg.sockets))
    real = not cfg.timing_only
    src = (OUT_BUFFER if in_place else IN_BUFFER) if real else ""
    dst = "" if in_place or not real else OUT_BUFFER
    op = CollectiveOp(f"{cfg.coll}-{nbytes}B", spec.kind, group, (c.send,), cfg.dtype, op=cfg.op,
                      algo=cfg.algo, chunks=cfg.chunks, buffer=src, root=cfg.root, out_buffer=dst)
    programs = {s: Program.of(f"{cfg.coll}-bench {nbytes} B", [op]) for s in group}

    def load() -> None:
        if real:
            node.load_tensors({s: {src: inputs[s]} for s in group})

    times_ns: list[int] = []
    walls_s: list[float] = []
    total = cfg.warmup + cfg.iters
    for it in range(total):
        load()  # every call starts from the inputs (in place, the last call overwrote them)
        t0 = _align(node, group, busy_ns)
        began = time.perf_counter()  # wall-clock ok: the bench reports host wall time
        results = node.run_programs(programs)
        wall = time.perf_counter() - began  # wall-clock ok
        busy_ns = max(max(r.end_ns, r.link_free_ns) for r in results.values())
        if it >= cfg.warmup:
            times_ns.append(max(r.end_ns for r in results.values()) - t0)
            walls_s.append(wall)
    wrong: int | None = None
    if cfg.checked:
        parts = [inputs[s] for s in group]
        names = [OUT_BUFFER] if in_place else [OUT_BUFFER, IN_BUFFER]
        wrong = 0
        for s in group:
            got = node.get_tensors(s, names)
            wrong += wrong_elements(cfg.coll, got[OUT_BUFFER], parts, s, cfg.op, cfg.dtype, cfg.root)
            if not in_place:  # out of place must leave the input as it was
                wrong += int(np.count_nonzero(np.asarray(got[IN_BUFFER]).reshape(-1) != inputs[s].reshape(-1)))
    t_ns = sorted(times_ns)[len(times_ns) // 2]
    algbw = nbytes / t_ns if t_ns > 0 else 0.0  # B/ns == GB/s
    return Result(t_ns / 1e3, algbw, algbw * bus_factor(cfg.coll, cfg.sockets), wrong,
                  1e6 * sum(walls_s) / len(walls_s)), busy_ns


def run_coll_bench(node: Any, cfg: CollBenchConfig) -> Iterator[CollRow]:
    """Yield one row per size (out-of-place, then in-place, as nccl-tests runs them)."""
    from sn40l_emu.program import np_dtype

    cfg.validate(node.n_sockets)
    cfg.check_profile(node.profile)
    spec = COLLS[cfg.coll]
    group = tuple(range(cfg.sockets))
    itemsize = np_dtype(cfg.dtype).itemsize
    busy_ns = 0
    for size in sizes_bytes(cfg.min_bytes, cfg.max_bytes, cfg.step_factor):
        c = counts(cfg.coll, size, itemsize, cfg.sockets)
        nbytes = max(c.send, c.recv) * itemsize
        inputs = _inputs(cfg, c) if not cfg.timing_only else {}
        oop, busy_ns = _run_one(node, cfg, c, nbytes, False, inputs, busy_ns)
        inp, busy_ns = _run_one(node, cfg, c, nbytes, True, inputs, busy_ns)
        if not cfg.timing_only:
            empty = np.zeros(0, np_dtype(cfg.dtype))
            node.load_tensors({s: {IN_BUFFER: empty, OUT_BUFFER: empty} for s in group})  # free them
        yield CollRow(nbytes, c.param, cfg.dtype, cfg.op.value if spec.reduces else "none",
                      cfg.root if spec.rooted else -1, oop, inp)


# ---- output, in nccl-tests' layout ---------------------------------------------------------------

_TYPE_NAMES = {"float32": "float", "float16": "half", "bfloat16": "bfloat16"}


def header() -> str:
    """nccl-tests' three header lines (the first names the column groups)."""
    left = f"#{'':>12}  {'':>12}  {'':>8}  {'':>6}  {'':>6}"
    cols = f"  {'time':>7}  {'algbw':>6}  {'busbw':>6} {'#wrong':>6}"
    units = f"  {'(us)':>7}  {'(GB/s)':>6}  {'(GB/s)':>6} {'':>6}"
    group_w = len(cols)
    return "\n".join([
        left + f"{'out-of-place':^{group_w}}" + f"{'in-place':^{group_w}}",
        f"#{'size':>12}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}" + cols + cols,
        f"#{'(B)':>12}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}" + units + units,
    ])


def _time_str(us: float) -> str:
    """nccl-tests' time format: fewer decimals as the time grows."""
    if us >= 10000.0:
        return f"{us:7.0f}"
    if us >= 100.0:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


def _group(r: Result) -> str:
    wrong = "N/A" if r.wrong is None else str(r.wrong)
    return f"  {_time_str(r.time_us)}  {r.algbw_gbps:6.2f}  {r.busbw_gbps:6.2f}  {wrong:>5}"


def format_row(row: CollRow) -> str:
    name = _TYPE_NAMES.get(row.dtype, row.dtype)
    return (f" {row.size_bytes:>12d}  {row.count:>12d}  {name:>8}  {row.redop:>6}  {row.root:>6d}"
            + _group(row.out_of_place) + _group(row.in_place))


def total_wrong(rows: list[CollRow]) -> int | None:
    vals = [r.wrong for row in rows for r in (row.out_of_place, row.in_place)]
    if all(v is None for v in vals):
        return None
    return sum(v or 0 for v in vals)


def preamble(cfg: CollBenchConfig, profile: Any, backend: str) -> list[str]:
    p = profile.p2p
    spec = COLLS[cfg.coll]
    factor = {"allreduce": "2(n-1)/n", "allgather": "(n-1)/n", "reducescatter": "(n-1)/n", "broadcast": "1"}
    return [
        f"# sn40l-emu coll-bench --coll {cfg.coll} (nccl-tests {spec.name}): group = sockets "
        f"0..{cfg.sockets - 1}, profile {profile.name}, backend {backend}",
        f"# topology {p.topology.value}, link {p.link_bw_bytes_per_s / 1e9:g} GB/s per direction, "
        f"latency {p.link_latency_ns / 1e3:g} us, chunk overhead {p.chunk_overhead_ns} ns",
        f"# algo {cfg.algo.value}, chunks {cfg.chunks or 'tuned'}, dtype {cfg.dtype}, "
        f"{'timing only (symbolic payloads)' if cfg.timing_only else 'real data'}, "
        f"check {'on' if cfg.checked else 'off'}, iters {cfg.iters}, warmup {cfg.warmup}",
        f"# time: virtual time from a common start to the last socket's result (median); "
        f"algbw = size / time; busbw = algbw x {factor[cfg.coll]}",
    ]


def to_json(cfg: CollBenchConfig, rows: list[CollRow], **extra: Any) -> dict[str, Any]:
    cfg_json = {**asdict(cfg), "algo": cfg.algo.value, "op": cfg.op.value, **extra}
    return {"config": cfg_json, "rows": [asdict(r) for r in rows]}


# ---- command -------------------------------------------------------------------------------------

def cmd_coll_bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments import rundir
    from sn40l_emu.experiments.options import from_args

    cfg = from_args(CollBenchConfig, args)
    profile = load_profile(cfg.profile, list(cfg.overrides))
    cfg = replace(cfg, sockets=cfg.sockets or profile.sockets)
    cfg.validate(profile.sockets)
    cfg.check_profile(profile)
    doc_cfg = to_json(cfg, [])["config"]
    run = rundir.prepare(f"{cfg.coll}-bench", {"bench": doc_cfg, "profile_resolved": profile.to_json()},
                         out=args.out, overwrite=args.overwrite, json_path=args.json,
                         argv=getattr(args, "argv", None))
    rows: list[CollRow] = []
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    with open_node(profile, backend=Backend(cfg.backend), address=cfg.address, trace=False) as node:
        for line in preamble(cfg, profile, cfg.backend):
            say(line)
        say(header())
        for row in run_coll_bench(node, cfg):
            rows.append(row)
            say(format_row(row))
    wrong = total_wrong(rows)
    for line in summary_lines(wrong, [r.out_of_place.busbw_gbps for r in rows]):
        say(line)
    doc = to_json(cfg, rows)
    run.write_json("results.json", doc)
    run.write_rows("results", [_flat(r) for r in rows])
    if args.json:
        rundir.write_copy(args.json, doc)
    run.finish("```\n" + "\n".join(lines) + "\n```", rows=len(rows))
    print(f"# wrote {run.path}/{' and ' + str(args.json) if args.json else ''}")
    return 0 if not wrong else 1


def _flat(row: CollRow) -> dict[str, Any]:
    """One CSV row: the nccl-tests columns, out-of-place and in-place side by side."""
    d = asdict(row)
    out = {k: v for k, v in d.items() if k not in ("out_of_place", "in_place")}
    for col in ("out_of_place", "in_place"):
        out.update({f"{col}_{k}": v for k, v in d[col].items()})
    return out


def _add_parser(sub: Any, name: str, help_text: str, coll: str | None) -> None:
    from sn40l_emu.experiments.options import add_options, output_args

    desc = (__doc__ or "").split("\n\n", 1)[-1].replace("``", "").replace(":class:", "")
    p = sub.add_parser(name, help=help_text, description=desc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, CollBenchConfig)
    output_args(p, "also write {config, rows} here")
    if coll is not None:
        p.set_defaults(coll=coll)
    p.set_defaults(func=cmd_coll_bench)


def register(sub: Any) -> None:
    """``coll-bench --coll NAME`` and one ``<name>-bench`` alias per collective all-reduce lacks."""
    _add_parser(sub, "coll-bench", "nccl-tests-style sweep of any collective (out-of-place, in-place)", None)
    for coll in ("allgather", "reducescatter", "broadcast"):
        _add_parser(sub, f"{coll}-bench", f"nccl-tests {COLLS[coll].name}-style sweep", coll)
