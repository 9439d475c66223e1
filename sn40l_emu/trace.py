"""Trace events and Chrome-trace / Perfetto JSON output.

Each socket records what it did as complete events (start, duration) on a
track (compute, dma, p2p, ...). ``write_chrome_trace`` lays sockets out as
processes and tracks as threads, so Perfetto (ui.perfetto.dev) or
chrome://tracing shows one row per socket and engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


def chrome_trace(events: Iterable[TraceEvent], *, process_names: dict[int, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chrome trace JSON object (timestamps in microseconds, as the format requires)."""
    out: list[dict[str, Any]] = []
    tids: dict[tuple[int, str], int] = {}
    pids: set[int] = set()
    for ev in sorted(events, key=lambda e: (e.start_ns, e.socket, e.track, e.name)):
        pid = ev.socket + 1  # pid 0 = coordinator
        pids.add(pid)
        tid = tids.setdefault((pid, ev.track), len([k for k in tids if k[0] == pid]) + 1)
        out.append({
            "name": ev.name, "ph": "X", "pid": pid, "tid": tid,
            "ts": ev.start_ns / 1000.0, "dur": ev.dur_ns / 1000.0,
            "args": {**_jsonable(ev.args), "start_ns": ev.start_ns, "dur_ns": ev.dur_ns},
        })
    names = process_names or {}
    for pid in sorted(pids):
        label = names.get(pid - 1, "coordinator" if pid == 0 else f"socket {pid - 1}")
        out.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": label}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}})
    for (pid, track), tid in tids.items():
        out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": track}})
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": metadata or {}}


def write_chrome_trace(path: str | Path, events: Iterable[TraceEvent], **kwargs: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(chrome_trace(events, **kwargs)))
    return p


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def events_to_dicts(events: Iterable[TraceEvent]) -> list[dict[str, Any]]:
    return [asdict(e) for e in events]
