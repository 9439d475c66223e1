"""Tier 1: Chrome-trace JSON is well formed and keeps nanoseconds."""

from __future__ import annotations

import json
from pathlib import Path

from sn40l_emu.trace import TraceEvent, write_chrome_trace


def test_chrome_trace_roundtrip(tmp_path: Path) -> None:
    evs = [TraceEvent(1500, 2500, 0, "compute", "k0", {"bound": "hbm"}),
           TraceEvent(0, 1000, 3, "p2p", "ar", {}), TraceEvent(10, 5, -1, "coe", "router")]
    p = write_chrome_trace(tmp_path / "t.json", evs)
    data = json.loads(p.read_text())
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 3
    k0 = next(e for e in xs if e["name"] == "k0")
    assert k0["ts"] == 1.5 and k0["dur"] == 2.5 and k0["args"]["dur_ns"] == 2500
    names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "process_name"}
    assert {"socket 0", "socket 3", "coordinator"} <= names
