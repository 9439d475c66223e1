"""Tier 1: Chrome-trace JSON is well formed and keeps nanoseconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _trace(evs: list[TraceEvent]) -> dict[str, object]:
    from sn40l_emu.trace import chrome_trace

    return chrome_trace(evs)


def test_trace_starts_at_zero_and_every_socket_has_compute_dma_p2p_tracks() -> None:
    evs = [TraceEvent(8_070_000_000, 2500, 0, "compute", "k0"), TraceEvent(8_070_001_000, 1000, 1, "p2p", "ar"),
           TraceEvent(8_070_000_500, 10, 1, "dma ddr->hbm", "copy"), TraceEvent(8_070_000_000, 5, -1, "coe", "x")]
    data = _trace(evs)
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]  # type: ignore[attr-defined]
    assert min(e["ts"] for e in xs) == 0 and data["otherData"]["origin_ns"] == 8_070_000_000  # type: ignore[index]
    assert next(e for e in xs if e["name"] == "ar")["args"]["start_ns"] == 8_070_001_000
    threads: dict[int, list[tuple[int, str]]] = {}
    for e in data["traceEvents"]:  # type: ignore[attr-defined]
        if e["name"] == "thread_name":
            threads.setdefault(e["pid"], []).append((e["tid"], e["args"]["name"]))
    assert [n for _, n in sorted(threads[1])] == ["compute", "dma", "p2p"]  # socket 0: empty dma, p2p rows too
    assert [n for _, n in sorted(threads[2])] == ["compute", "dma ddr->hbm", "p2p"]


def test_p2p_messages_become_flow_events() -> None:
    key = "0>3:7:0"
    evs = [TraceEvent(100, 0, 0, "p2p", "send to 3", {"flow_out": key}),
           TraceEvent(1_200, 0, 3, "p2p", "arrival from 0", {"flow_in": key}),
           # the same message again (a reused copy later in time) pairs with its own arrival
           TraceEvent(5_100, 0, 0, "p2p", "send to 3", {"flow_out": key}),
           TraceEvent(6_200, 0, 3, "p2p", "arrival from 0", {"flow_in": key})]
    data = _trace(evs)
    flows = [e for e in data["traceEvents"] if e["ph"] in ("s", "f")]  # type: ignore[attr-defined]
    assert len(flows) == 4
    by_id: dict[int, dict[str, dict[str, object]]] = {}
    for f in flows:
        by_id.setdefault(f["id"], {})[f["ph"]] = f
    assert len(by_id) == 2
    for pair in by_id.values():
        s, f = pair["s"], pair["f"]
        assert s["pid"] == 1 and f["pid"] == 4 and f["bp"] == "e"
        assert f["ts"] > s["ts"]  # type: ignore[operator]


@pytest.mark.slow
def test_reused_decode_steps_are_drawn_as_their_exact_shifted_copies() -> None:
    """A run with cost reuse, its trace expanded, equals the same run with every step real."""
    from sn40l_emu.cluster.node import LocalNode
    from sn40l_emu.config import load_profile
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.trace import expand_reused
    from sn40l_emu.workload import ExecMode, Step, load_model, make_plan

    model = load_model("llama2-7b")  # full size: a later step reads more KV, so its kernels really grow
    prof = load_profile("sn40l")
    plan = make_plan(model, 2)
    book = ProgramBook()

    def run(reuse_on: bool) -> tuple[list[TraceEvent], int]:
        node = LocalNode(prof, 2)
        reuse = CostReuse(node, enabled=reuse_on)
        events: list[TraceEvent] = []
        for ctx in range(4000, 4003):
            for r in reuse.run(book.group(model, plan, Step.decode(1, ctx), ExecMode.FUSED_HO)).values():
                events += r.events
        return events, reuse.stats.reused_runs + reuse.layer_stats.reused_runs

    real, _ = run(False)
    reused, n_reused = run(True)
    assert n_reused > 0  # the reuse path really ran
    assert any(e.track == "program" for e in reused)  # summary events before expansion
    durs: dict[str, set[int]] = {}
    for e in real:
        if e.track == "compute":
            durs.setdefault(e.name, set()).add(e.dur_ns)
    assert any(len(d) > 1 for d in durs.values())  # a kernel grows from step to step: shifts are not uniform
    expanded, left = expand_reused(reused)
    assert left == 0

    def key(evs: list[TraceEvent]) -> list[tuple[int, int, int, str, str]]:
        return sorted((e.socket, e.start_ns, e.dur_ns, e.track, e.name.replace("L*.", "L."))
                      for e in evs if "flow_out" not in e.args and "flow_in" not in e.args)

    def canon(evs: list[TraceEvent]) -> list[tuple[int, int, int, str, str]]:
        import re
        return [(s, t, d, tr, re.sub(r"^L\d+\.", "L.", n)) for s, t, d, tr, n in key(evs)]

    assert canon(expanded) == canon(real)


@pytest.mark.slow
def test_coe_trace_of_a_chosen_row_draws_every_step(tmp_path: Path) -> None:
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.experiments.coe_sweep import SweepConfig, parse_trace_row, run_sweep

    cfg = SweepConfig(platforms=("sn40l",), experts=(4, 8), batch_sizes=(2,), tokens=(3,), model="tiny-llama",
                      prompt_len=4, backend="local")
    path = tmp_path / "coe_trace.json"
    rows = run_sweep(cfg, progress=False, trace_path=path, trace_row=parse_trace_row("sn40l:4:2:3"))
    data = json.loads(path.read_text())
    assert data["otherData"]["row"]["experts"] == 4 == rows[0]["experts"]  # the chosen row, not the default
    assert data["otherData"]["reused_runs_not_expanded"] == 0
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert min(e["ts"] for e in xs) == 0
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"}
    assert "program" not in threads.values()  # no summary blocks left: reused steps are real events
    # every socket ran the router (its expert-choice head, no LM head) and, per request, a prefill and
    # 2 decode steps: 6 programs with one LM head each
    for pid in range(1, 9):
        heads = [e for e in xs if e["pid"] == pid and e["name"] == "lm_head.logits"]
        assert len(heads) == 2 * 3
        assert len([e for e in xs if e["pid"] == pid and e["name"] == "router.expert_head"]) == 1
        assert {"compute", "p2p"} <= {threads[(pid, e["tid"])] for e in xs if e["pid"] == pid}
    assert any("reused_copy_of" in e["args"] for e in xs)
    flows = [e for e in data["traceEvents"] if e["ph"] in ("s", "f")]
    assert flows and len({e["id"] for e in flows}) * 2 == len(flows)
    for bad in ("sn40l:4:2", "sn40l:x:2:3"):
        with pytest.raises(ConfigError):
            parse_trace_row(bad)
    with pytest.raises(ConfigError):
        run_sweep(cfg, progress=False, trace_path=path, trace_row=("dgx-a100", 4, 2, 3))
