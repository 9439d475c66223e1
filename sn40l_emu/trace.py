"""Trace events and Chrome-trace / Perfetto JSON output.

Each socket records what it did as complete events (start, duration) on a
track: ``compute`` (kernels), ``dma <src>-><dst>`` (one per DMA engine), ``p2p``
(collectives, and each P2P message's send and arrival as zero-length marks).
``write_chrome_trace`` lays sockets out as processes and tracks as threads, so
Perfetto (ui.perfetto.dev) or chrome://tracing shows one row per socket and
engine, in that order: compute, DMA, P2P.

Three things make a trace answer questions:

* **It starts at 0.** Timestamps are relative to the earliest event; the absolute
  virtual time stays in every event's ``args.start_ns`` and the origin in
  ``otherData.origin_ns``.
* **Reused work is drawn.** Cost reuse (``sn40l_emu.engine.reuse``) returns one
  summary event per socket for a program whose cost it shifted from a reference
  run. :func:`expand_reused` replaces it with the reference's own events, shifted
  exactly as the reuse argument shifts them: everything after kernel k moves by
  the sum of the kernel-time changes d_0..d_k, and kernel k itself grows by d_k.
  Nested reuse (identical decoder layers inside a reused decode step) expands
  recursively.
* **Messages are arrows.** A message's send mark carries ``flow_out`` and its
  arrival mark ``flow_in`` with the same key (source, destination, tag,
  sequence); the writer pairs them into Perfetto flow events (``ph: s`` / ``f``
  with one ``id`` per message). Arrows are drawn for the programs that ran for
  real; reused copies show the same collectives at their shifted times without
  repeating every message (a decode step of a 7B model at TP8 has ~7,000).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# args a reused summary event carries for expand_reused (never written to JSON: they start with "_")
REFERENCE_ARG = "_reference"  # the reference ProgramResult (start_ns, kernel_ns, events)
KERNEL_NS_ARG = "_kernel_ns"  # the reused program's kernel times, in program order

_TRACK_ORDER = ("compute", "dma", "p2p", "program")


@dataclass(frozen=True)
class TraceEvent:
    start_ns: int
    dur_ns: int
    socket: int  # -1 = the coordinator / host
    track: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def shifted(self, delta_ns: int) -> TraceEvent:
        return TraceEvent(self.start_ns + delta_ns, self.dur_ns, self.socket, self.track,
                          self.name, self.args)


class TraceRecorder:
    """Collects events of one socket (or the coordinator)."""

    def __init__(self, socket: int, enabled: bool = True) -> None:
        self.socket = socket
        self.enabled = enabled
        self.events: list[TraceEvent] = []

    def record(self, start_ns: int, dur_ns: int, track: str, name: str, **args: Any) -> None:
        if self.enabled:
            self.events.append(TraceEvent(int(start_ns), int(dur_ns), self.socket, track, name, args))

    def drain(self) -> list[TraceEvent]:
        out, self.events = self.events, []
        return out


# ---- reused programs drawn as real events -----------------------------------------------------

def is_reused(ev: TraceEvent) -> bool:
    return REFERENCE_ARG in ev.args and KERNEL_NS_ARG in ev.args


def _reference_events(ref: Any, budget: int, memo: dict[int, list[TraceEvent] | None]
                      ) -> list[TraceEvent] | None:
    """A reference result's events with its own reused parts expanded (memoised per reference)."""
    key = id(ref)
    if key not in memo:
        memo[key] = None  # a reference never contains itself; this also bounds the recursion
        out: list[TraceEvent] = []
        for e in ref.events:
            if is_reused(e):
                copies = _copies(e, budget, memo)
                if copies is None:
                    return None
                out += copies
            else:
                out.append(e)
            if len(out) > budget:
                return None
        memo[key] = out
    return memo[key]


def _copies(ev: TraceEvent, budget: int, memo: dict[int, list[TraceEvent] | None]) -> list[TraceEvent] | None:
    """The shifted copies of a reused summary event's reference events (None: over budget)."""
    ref = ev.args[REFERENCE_ARG]
    ref_events = _reference_events(ref, budget, memo)
    if ref_events is None or len(ref_events) > budget:
        return None
    new_kernels: Sequence[int] = ev.args[KERNEL_NS_ARG]
    old_kernels: Sequence[int] = ref.kernel_ns
    base = ev.start_ns - ref.start_ns
    out: list[TraceEvent] = []
    k = 0  # kernels seen so far, in program order
    cum = 0  # the sum of their time changes
    label = str(ev.args.get("reused_from", ref.label))
    for e in ref_events:
        if "flow_out" in e.args or "flow_in" in e.args:
            continue  # message arrows are drawn for the runs that ran for real, not for every copy
        args = {**e.args, "reused_copy_of": label}
        if e.track == "compute" and k < len(old_kernels):
            d = int(new_kernels[k]) - int(old_kernels[k]) if k < len(new_kernels) else 0
            out.append(TraceEvent(e.start_ns + base + cum, e.dur_ns + d, e.socket, e.track, e.name, args))
            cum += d
            k += 1
        else:
            out.append(TraceEvent(e.start_ns + base + cum, e.dur_ns, e.socket, e.track, e.name, args))
    return out


def expand_reused(events: Iterable[TraceEvent], max_events: int = 1_000_000) -> tuple[list[TraceEvent], int]:
    """Every reused summary event replaced by its shifted reference events, while the trace stays
    under ``max_events``; returns (events, summary events left as they were)."""
    memo: dict[int, list[TraceEvent] | None] = {}
    out: list[TraceEvent] = []
    left = 0
    for ev in events:
        if is_reused(ev):
            copies = _copies(ev, max_events - len(out), memo)
            if copies is not None:
                out += copies
                continue
            left += 1
        out.append(ev)
    return out, left


# ---- Chrome trace JSON -------------------------------------------------------------------------

def _track_key(track: str) -> tuple[int, str]:
    head = track.split(" ", 1)[0]
    rank = _TRACK_ORDER.index(head) if head in _TRACK_ORDER else len(_TRACK_ORDER)
    return rank, track


def chrome_trace(events: Iterable[TraceEvent], *, process_names: dict[int, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chrome trace JSON object (timestamps in microseconds from the first event, as the format requires)."""
    evs = sorted(events, key=lambda e: (e.start_ns, -e.dur_ns, e.socket, e.track, e.name))
    origin = evs[0].start_ns if evs else 0
    pids = sorted({e.socket + 1 for e in evs})  # pid 0 = coordinator
    tracks: dict[int, set[str]] = defaultdict(set)
    for e in evs:
        tracks[e.socket + 1].add(e.track)
    for pid in pids:
        if pid > 0:  # every socket shows its compute, DMA and P2P rows, even when one is empty
            have_dma = any(t.startswith("dma") for t in tracks[pid])
            tracks[pid] |= {"compute", "p2p"} | (set() if have_dma else {"dma"})
    tids = {(pid, t): i + 1 for pid in pids for i, t in enumerate(sorted(tracks[pid], key=_track_key))}

    out: list[dict[str, Any]] = []
    sends: dict[str, list[dict[str, Any]]] = defaultdict(list)
    recvs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in evs:
        pid = ev.socket + 1
        tid = tids[(pid, ev.track)]
        ts = (ev.start_ns - origin) / 1000.0
        out.append({
            "name": ev.name, "ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": ev.dur_ns / 1000.0,
            "args": {**_jsonable(ev.args), "start_ns": ev.start_ns, "dur_ns": ev.dur_ns},
        })
        if "flow_out" in ev.args:
            sends[str(ev.args["flow_out"])].append({"pid": pid, "tid": tid, "ts": ts})
        if "flow_in" in ev.args:
            recvs[str(ev.args["flow_in"])].append({"pid": pid, "tid": tid, "ts": ts})
    flow_id = 0
    for key in sorted(sends):
        # copies of one message (reused steps) pair in time order: the i-th send with the i-th arrival
        for s, f in zip(sends[key], recvs.get(key, []), strict=False):
            flow_id += 1
            common = {"name": "p2p message", "cat": "p2p", "id": flow_id}
            out.append({**common, "ph": "s", **s})
            out.append({**common, "ph": "f", "bp": "e", **f})
    names = process_names or {}
    for pid in pids:
        label = names.get(pid - 1, "coordinator" if pid == 0 else f"socket {pid - 1}")
        out.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": label}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}})
    for (pid, track), tid in sorted(tids.items()):
        out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": track}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    other = {**(metadata or {}), "origin_ns": origin, "time_unit": "ts: us of virtual time after origin_ns"}
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": other}


def write_chrome_trace(path: str | Path, events: Iterable[TraceEvent], *, expand: bool = True,
                       max_events: int = 1_000_000, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> Path:
    """Write the trace; reused runs are drawn as their shifted copies (:func:`expand_reused`) unless
    ``expand`` is False. Summary blocks left because of ``max_events`` are counted in ``otherData``."""
    evs = list(events)
    meta = dict(metadata or {})
    if expand:
        evs, left = expand_reused(evs, max_events)
        if left:
            meta["reused_runs_not_expanded"] = left
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(chrome_trace(evs, metadata=meta, **kwargs)))
    return p


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        if k.startswith("_"):
            continue  # private: e.g. the reference a reused event points to
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        else:
            out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def events_to_dicts(events: Iterable[TraceEvent]) -> list[dict[str, Any]]:
    return [{"start_ns": e.start_ns, "dur_ns": e.dur_ns, "socket": e.socket, "track": e.track, "name": e.name,
             "args": _jsonable(e.args)} for e in events]
