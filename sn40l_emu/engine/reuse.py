"""Cost reuse: identical programs on an unchanged node cost the same (docs/architecture.md).

A decode step at context L+1 differs from the one at L only in the kernels
that read the KV cache. Socket timelines are max-plus expressions of kernel
durations, link serialisations and latencies, so when every socket's kernel k
gets the same extra time d_k (symmetric TP programs), everything after it
shifts by d_k on every socket, and the step's duration grows by sum(d_k).
That is exact, not an approximation, under conditions this module checks:

1. the programs have the same structure as a reference run (same ops in the
   same order; collectives identical; only kernel costs differ);
2. the node is in the same timing state (``node.version``: every change of
   state moves it, a power-cycle brings it back to 0), and sockets enter with
   the same clock offsets relative to each other as in the reference;
3. for every kernel position the change d_k is the same on every socket and
   not negative (a later step only ever reads more KV cache);
4. in the reference every collective found its links idle when it started and
   the links were idle when the program began, so shifting later keeps them idle.

A run that leaves links busy (a degraded link still draining when its sender
moves on) breaks 4, yet it is still a pure translation: with the same programs
(so the very same kernel costs), the same timing state, the same clock
offsets and the same links busy for the same time past each socket's clock
(``LinkStateNode.busy_links``), nothing in the run depends on absolute time,
so it repeats exactly, shifted, and leaves the same links busy, shifted
(``occupy_links``). Such runs are kept as *exact* references, keyed by all
of that, and reused without any change of kernel cost.

Otherwise the programs run for real. Functional programs (with real numbers)
and programs that allocate or copy (their side effects must happen) always run
for real.

The same argument works inside one program: a model's decoder layers are the
same program again and again, so a timing program is run as a sequence of
segments (``[embed, all-reduce] [L*] [L*] ... [lm_head, ...]``, see
:mod:`sn40l_emu.engine.layer_reuse`), each looked up or run like a step. A
socket's program is a sequence, so running it in consecutive pieces gives the
same clocks as running it whole. So a 126-layer decode step costs a handful of
real segments, and the following steps are shifted copies of the first.

This object holds no clocks. It reads the start clocks from the node, and a
reused result is applied to the node (``node.advance_clocks``) before it is
returned, so the node's clocks are always those of running everything for
real; anything may run on the node in between, and nothing needs telling.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sn40l_emu.cluster.node import Node
from sn40l_emu.engine.layer_reuse import canonical_op, merge_results, split_layers
from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.program import CollectiveOp, KernelOp, Op, Program
from sn40l_emu.socket_actor.socket_model import ProgramResult
from sn40l_emu.socket_actor.tile import Degradation, KernelCost, kernel_cost
from sn40l_emu.trace import KERNEL_NS_ARG, REFERENCE_ARG, TraceEvent


def structure(program: Program) -> tuple[Any, ...]:
    """A program's shape with kernel costs left out: what must match for reuse."""
    out: list[Any] = []
    for op in program.ops:
        if isinstance(op, KernelOp):
            if op.fn is not None:
                raise ValueError("functional programs are never reused")
            out.append(("K", op.name, op.launch, op.fused))
        else:
            out.append(op)
    return tuple(out)


def _reusable(program: Program) -> bool:
    """Only timing-mode kernels and collectives: memory and DMA side effects must really happen."""
    return all((isinstance(op, KernelOp) and op.fn is None) or isinstance(op, CollectiveOp)
               for op in program.ops)


_Shift = tuple[int, dict[int, dict[str, int]], dict[int, list[int]], dict[int, int]]


@dataclass
class _Ref:
    """A reference run and the shifts computed against it.

    The shifts live in the reference itself: a later real run of the same
    structure replaces the reference (a prefill and a decode layer can share a
    structure), and a shift computed against the old one would add the new
    one's duration to the old one's deltas.
    """

    results: dict[int, ProgramResult]
    costs: dict[int, list[KernelCost]]
    # an exact reference (links busy during or after it): per socket, the links busy after
    # it as (link, free_ns - its start_ns); reused only unchanged, never shifted by kernel deltas
    exit_links: dict[int, BusyLinks] | None = None
    # program ids -> (the programs, kept alive so their ids stay theirs; the shift)
    shifts: dict[tuple[tuple[int, int], ...], tuple[tuple[Program, ...], _Shift]] = field(
        default_factory=dict)


@dataclass
class ReuseStats:
    real_runs: int = 0
    reused_runs: int = 0


def apply_results(node: Node, results: Mapping[int, ProgramResult]) -> None:
    """Apply results computed without the node (reused costs) to it: each socket's clock moves to its end."""
    node.advance_clocks({s: r.end_ns for s, r in results.items()})


class CostReuse:
    """Runs group programs on a node, reusing measured costs when that is exact.

    Two levels, one table: whole programs (``steps``: a decode step at a new
    context length is the last one shifted) and decoder-layer segments
    (``layers``). A reused run costs no actor call: the node applies its
    result to its own clocks and hands them to the sockets with their next
    program. The tables are keyed by the node's version, so they stay valid
    across power-cycles (sweep rows) and injections never need an invalidation.
    """

    def __init__(self, node: Node, *, enabled: bool = True, steps: bool = True, layers: bool = True,
                 exact: bool = True) -> None:
        """``exact``: also keep and repeat exact references (runs that leave links busy)."""
        self.node = node
        self.enabled = enabled
        self.exact = exact
        self.steps = steps
        self.layers = layers
        self._refs: dict[Any, _Ref] = {}
        self._exact: dict[Any, _Ref] = {}  # runs that leave or meet busy links (see the module doc)
        self._kcost: dict[tuple[Degradation, KernelOp], KernelCost] = {}
        self._pcost: dict[tuple[int, Degradation], tuple[Program, list[KernelCost]]] = {}
        self._keys: dict[tuple[tuple[int, int], ...], tuple[Any, tuple[Any, ...]]] = {}
        self._sids: dict[tuple[Any, ...], int] = {}  # program structure -> small id (never reused)
        self._sid_counter = itertools.count()
        self._segments: dict[int, tuple[Program, tuple[Program, ...]]] = {}
        self._intern: dict[tuple[Op, ...], Program] = {}
        self._reusable_memo: dict[int, tuple[Program, bool]] = {}
        self.stats = ReuseStats()  # whole programs
        self.layer_stats = ReuseStats()  # decoder-layer segments

    # ---- running ------------------------------------------------------------
    def run(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        """Run (or reuse) one program per socket; the node's clocks end as if all ran for real."""
        if not self.enabled or not all(self._reusable(p) for p in programs.values()):
            self.stats.real_runs += 1
            return self.node.run_programs(programs)
        if self.steps:
            return self._cached(programs, self.stats, self._segmented)
        self.stats.real_runs += 1
        return self._segmented(programs)

    def _cached(self, programs: Mapping[int, Program], stats: ReuseStats,
                real: Callable[[Mapping[int, Program]], dict[int, ProgramResult]]) -> dict[int, ProgramResult]:
        """Reuse a reference run of the same structure, state and offsets, or run ``real`` and keep it."""
        now = self.node.clocks()
        base = min(now[s] for s in programs)
        offsets = tuple(now[s] - base for s in sorted(programs))
        skey, _ = self._structure_key(programs)
        version = self.node.version
        key = (skey, version, offsets)
        entry = self._entry_links(programs, now) if self.exact else None
        ref = self._refs.get(key) if entry is None or not any(entry) else None
        if ref is not None:
            shifted = self._shift(key, ref, programs, now)
            if shifted is not None:
                stats.reused_runs += 1
                apply_results(self.node, shifted)
                return shifted
        xkey = None
        if entry is not None:
            xkey = (key, entry, tuple(id(self._costs(s, programs[s])) for s in sorted(programs)))
            xref = self._exact.get(xkey)
            if xref is not None:
                stats.reused_runs += 1
                return self._translate(xref, programs, now)
        stats.real_runs += 1
        results = real(programs)
        if self.node.version != version:
            return results
        if all(r.links_idle for r in results.values()):
            self._refs[key] = _Ref(results, {s: self._costs(s, p) for s, p in programs.items()})
        elif xkey is not None:
            after = self.node.busy_links(sorted(programs))  # type: ignore[attr-defined]
            if after is not None:
                if len(self._exact) > 50_000:
                    self._exact.clear()
                # the cost lists in the key stay alive in the reference, so their ids stay theirs
                exit_links = {s: tuple((k, f - results[s].start_ns) for k, f in after[s]) for s in programs}
                self._exact[xkey] = _Ref(results, {s: self._costs(s, p) for s, p in programs.items()},
                                         exit_links=exit_links)
        return results

    def _entry_links(self, programs: Mapping[int, Program], now: list[int]
                     ) -> tuple[BusyLinks, ...] | None:
        """Per socket (sorted), its busy links as (link, free_ns - its clock); None: the node cannot tell."""
        ask = getattr(self.node, "busy_links", None)
        if ask is None:
            return None
        order = sorted(programs)
        busy = ask(order)
        if busy is None:
            return None
        return tuple(tuple((k, f - now[s]) for k, f in busy[s]) for s in order)

    def _translate(self, ref: _Ref, programs: Mapping[int, Program], now: list[int]) -> dict[int, ProgramResult]:
        """An exact reference repeated from ``now``: every time moves by the socket's clock change."""
        assert ref.exit_links is not None
        out: dict[int, ProgramResult] = {}
        occupy: dict[int, BusyLinks] = {}
        for s, prog in programs.items():
            r = ref.results[s]
            start = now[s]
            end = start + r.duration_ns
            ev = TraceEvent(start, end - start, s, "program", f"{prog.label} (reused cost)",
                            {"reused_from": r.label, REFERENCE_ARG: r, KERNEL_NS_ARG: r.kernel_ns})
            busy = tuple((k, start + rel) for k, rel in ref.exit_links[s])
            out[s] = ProgramResult(s, prog.label, start, end, dict(r.breakdown_ns), list(r.kernel_ns), [ev],
                                   r.link_free_ns - r.start_ns + start, r.links_idle, r.hidden_ns, busy)
            if busy:
                occupy[s] = busy
        apply_results(self.node, out)
        if occupy:
            self.node.occupy_links(occupy)  # type: ignore[attr-defined]
        return out

    def _segmented(self, programs: Mapping[int, Program]) -> dict[int, ProgramResult]:
        """Run decoder layers as segments, each reused when exact; the merged result per socket."""
        if not self.layers:
            return self.node.run_programs(programs)
        segs = {s: self.segments(p) for s, p in programs.items()}
        counts = {len(v) for v in segs.values()}
        if len(counts) != 1 or counts == {1}:  # sockets disagree on the layers, or there are none
            return self.node.run_programs(programs)
        parts: dict[int, list[ProgramResult]] = {s: [] for s in programs}
        for k in range(counts.pop()):
            for s, r in self._cached({s: segs[s][k] for s in programs}, self.layer_stats,
                                     self.node.run_programs).items():
                parts[s].append(r)
        return {s: merge_results(parts[s], programs[s].label) for s in programs}

    def _reusable(self, program: Program) -> bool:
        """:func:`_reusable`, memoised by program (a decode loop asks about the same objects)."""
        hit = self._reusable_memo.get(id(program))
        if hit is None or hit[0] is not program:
            if len(self._reusable_memo) > 50_000:
                self._reusable_memo.clear()
            hit = self._reusable_memo[id(program)] = (program, _reusable(program))  # keeps the id alive
        return hit[1]

    def segments(self, program: Program) -> tuple[Program, ...]:
        """``program`` cut at decoder-layer boundaries, layer segments in canonical form (interned)."""
        hit = self._segments.get(id(program))
        if hit is not None and hit[0] is program:
            return hit[1]
        out = []
        for i, (layer, ops) in enumerate(split_layers(program.ops)):
            if layer is None:
                out.append(Program(f"{program.label}#{i}", tuple(ops)))
                continue
            canon = tuple(canonical_op(op) for op in ops)
            seg = self._intern.get(canon)
            if seg is None:
                seg = self._intern.setdefault(canon, Program(f"{program.label}#L*", canon))
            out.append(seg)
        if len(self._segments) > 10_000:
            self._segments.clear()
        if len(self._intern) > 10_000:
            self._intern.clear()
        self._segments[id(program)] = (program, tuple(out))  # keeps the id alive
        return tuple(out)

    # ---- costs and keys -----------------------------------------------------
    def _costs(self, socket: int, program: Program) -> list[KernelCost]:
        """Kernel costs of ``program`` on ``socket`` (memoised by program and degradation)."""
        from sn40l_emu.socket_actor.socket_model import host_rate_per_socket

        deg = self.node.degradation(socket)
        pkey = (id(program), deg)
        hit = self._pcost.get(pkey)
        if hit is not None and hit[0] is program:
            return hit[1]
        prof = self.node.profile
        host = host_rate_per_socket(prof)
        out = []
        for op in program.ops:
            if isinstance(op, KernelOp):
                key = (deg, op)
                c = self._kcost.get(key)
                if c is None:
                    c = kernel_cost(op, prof.socket, prof.tile, prof.launch, host, deg)
                    self._kcost[key] = c
                out.append(c)
        if len(self._pcost) > 20_000:
            self._pcost.clear()
        self._pcost[pkey] = (program, out)
        return out

    def _structure_key(self, programs: Mapping[int, Program]) -> tuple[Any, tuple[Any, ...]]:
        ident = tuple((s, id(programs[s])) for s in sorted(programs))
        hit = self._keys.get(ident)
        if hit is None:
            # one structure per distinct program (TP programs are often one shared object),
            # interned to a small int so that keys hash cheaply
            sids: dict[int, int] = {}
            for p in programs.values():
                if id(p) not in sids:
                    shape = structure(p)
                    sid = self._sids.get(shape)
                    if sid is None:
                        if len(self._sids) > 50_000:
                            self._sids.clear()  # ids are never handed out twice, so old refs just miss
                        sid = self._sids[shape] = next(self._sid_counter)
                    sids[id(p)] = sid
            hit = (tuple((s, sids[id(programs[s])]) for s in sorted(programs)),
                   tuple(programs[s] for s in sorted(programs)))  # keeps ids alive
            if len(self._keys) > 50_000:
                self._keys.clear()
            self._keys[ident] = hit
        return hit

    def _shift(self, key: Any, ref: _Ref, programs: Mapping[int, Program],
               now: list[int]) -> dict[int, ProgramResult] | None:
        ident = tuple((s, id(programs[s])) for s in sorted(programs))
        hit = ref.shifts.get(ident)
        if hit is None:
            memo = self._compute_shift(ref, programs)
            if memo is None:
                return None
            if len(ref.shifts) > 10_000:
                ref.shifts.clear()
            hit = ref.shifts[ident] = (tuple(programs[s] for s in sorted(programs)), memo)
        total, bds, kns, hid = hit[1]
        out: dict[int, ProgramResult] = {}
        for s, prog in programs.items():
            r = ref.results[s]
            start = now[s]
            end = start + r.duration_ns + total
            # the reference and the new kernel times let the trace draw this run as shifted copies
            # of the reference's events (sn40l_emu.trace.expand_reused)
            ev = TraceEvent(start, end - start, s, "program", f"{prog.label} (reused cost)",
                            {"reused_from": r.label, REFERENCE_ARG: r, KERNEL_NS_ARG: kns[s]})
            out[s] = ProgramResult(s, prog.label, start, end, dict(bds[s]), kns[s], [ev],
                                   r.link_free_ns, r.links_idle, hid[s])
        return out

    def _compute_shift(self, ref: _Ref, programs: Mapping[int, Program]) -> _Shift | None:
        from sn40l_emu.socket_actor.pipeline import program_hidden_ns

        deltas: list[int] | None = None
        bds: dict[int, dict[str, int]] = {}
        kns: dict[int, list[int]] = {}
        hid: dict[int, int] = {}
        prof, n = self.node.profile, self.node.n_sockets
        # sockets running the same program against the same reference costs share the work
        pairs: dict[tuple[int, int], tuple[list[int], dict[str, int], list[int], int]] = {}
        for s, prog in programs.items():
            new = self._costs(s, prog)
            old = ref.costs[s]
            pair = pairs.get((id(new), id(old)))
            if pair is None:
                # a kernel whose all-reduce streams out of it (socket_actor/pipeline.py) ends
                # the pair earlier by the hidden time: the shift is the change net of it
                h_new = program_hidden_ns(prog.ops, new, prof, n)
                h_old = program_hidden_ns(prog.ops, old, prof, n)
                d = [a.total_ns - b.total_ns - (hn - ho)
                     for a, b, hn, ho in zip(new, old, h_new, h_old, strict=True)]
                change: dict[str, int] = {}
                for a, b in zip(new, old, strict=True):
                    if a is not b:
                        for k in a.attribution_ns:
                            change[k] = change.get(k, 0) + a.attribution_ns[k] - b.attribution_ns[k]
                dh = sum(h_new) - sum(h_old)
                if dh:
                    change["collectives"] = change.get("collectives", 0) - dh
                pair = pairs[(id(new), id(old))] = (d, change, [c.total_ns for c in new], dh)
                if any(x < 0 for x in d):
                    return None
            d, change, totals, dh = pair
            if deltas is not None and d is not deltas and d != deltas:
                return None
            deltas = d
            bd = dict(ref.results[s].breakdown_ns)
            for k, v in change.items():
                bd[k] += v
            if min(bd.values()) < 0:
                return None
            bds[s] = bd
            kns[s] = list(totals)
            hid[s] = ref.results[s].hidden_ns + dh
        assert deltas is not None
        return sum(deltas), bds, kns, hid
