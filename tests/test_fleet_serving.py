"""Serving metrics, CSV arrival traces, and measured-once node costs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sn40l_emu.cli import main
from sn40l_emu.coe.fleet_arrivals import read_trace_csv
from sn40l_emu.coe.serving import BatchTiming, BatchTimingError, simulate_serving
from sn40l_emu.coe.serving_metrics import SLO, serving_metrics
from sn40l_emu.coe.workload import Request
from sn40l_emu.errors import ConfigError
from sn40l_emu.experiments.coe_serve import run_serving

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "traces" / "coe_serve_sample.csv"
AZURE = ROOT / "traces" / "azure_format_sample.csv"


def _two_phase(batch: list[Request]) -> BatchTiming:
    """Each request: 10 ns prefill, then 2 ns per further token, in turn."""
    t, first, done = 0, [], []
    for r in batch:
        first.append(t + 10)
        t += 10 + 2 * (r.output_tokens - 1)
        done.append(t)
    return BatchTiming(t, tuple(done), None, None, tuple(first))


def test_ttft_tpot_and_goodput_by_hand() -> None:
    reqs = [Request(0, 0, 4, 3, 0), Request(1, 0, 4, 1, 0), Request(2, 0, 4, 5, 100)]
    out = simulate_serving(reqs, 2, _two_phase)
    # batch 1 at 0: r0 first token 10, done 14; r1 first 24 = done 24. r2 alone at 100: 110, 118
    by_id = {r.request_id: r for r in out.records}
    assert [by_id[i].ttft_ns for i in range(3)] == [10, 24, 10]
    assert by_id[0].tpot_ns == 2.0 and by_id[1].tpot_ns is None and by_id[2].tpot_ns == 2.0
    m = serving_metrics(out.records, SLO(ttft_ns=20))
    assert m["ttft_p50_ns"] == 10 and m["ttft_p99_ns"] == 24
    assert m["latency_mean_ns"] == pytest.approx((14 + 24 + 18) / 3)
    assert m["slo_met"] == 2 and m["completed"] == 3
    assert m["goodput_per_s"] == pytest.approx(2 * 1e9 / 118)
    assert serving_metrics(out.records, SLO(tpot_ns=1))["slo_met"] == 1  # only the 1-token one


def test_first_token_after_completion_is_refused() -> None:
    def bad(batch: list[Request]) -> BatchTiming:
        return BatchTiming(10, (5,) * len(batch), None, None, (6,) * len(batch))

    with pytest.raises(BatchTimingError):
        simulate_serving([Request(0, 0, 4, 3, 0)], 1, bad)


def test_sample_trace_and_azure_columns_are_read() -> None:
    reqs = read_trace_csv(SAMPLE, 16)
    assert len(reqs) == 200 and reqs[0].arrival_ns == 0
    assert [r.arrival_ns for r in reqs] == sorted(r.arrival_ns for r in reqs)
    assert len({r.expert for r in reqs}) == 8  # eight domains -> experts 0..7
    azure = read_trace_csv(AZURE, 4, [i % 4 for i in range(50)])
    assert len(azure) == 50 and azure[0].arrival_ns == 0 and azure[-1].arrival_ns > 0
    assert {r.prompt_len for r in azure} <= {100, 200, 374, 512}
    with pytest.raises(ConfigError):
        read_trace_csv(AZURE, 4)  # no expert column and none supplied
    with pytest.raises(ConfigError):
        read_trace_csv(SAMPLE, 4)  # eight domains do not fit four experts


@pytest.mark.parametrize(("platform", "experts"), [("sn40l", 40), ("sn40l", 6), ("dgx-a100", 60)])
def test_measured_costs_give_the_coordinators_nanoseconds(platform: str, experts: int) -> None:
    """A cache that evicts, one that never fills, and a DGX that switches from host memory."""
    kw = {"backend": "local", "progress": False, "seed": 3}
    fast = run_serving(platform, "llama2-7b", experts, 4, 20.0, 24, ["lru"], **kw)[0]  # type: ignore[arg-type]
    exact = run_serving(platform, "llama2-7b", experts, 4, 20.0, 24, ["lru"], exact=True, **kw)[0]  # type: ignore[arg-type]
    for key in ("p50_ns", "p90_ns", "p99_ns", "latency_mean_ns", "hit_rate", "batches", "completed"):
        assert fast[key] == exact[key], key
    assert fast["costs"] == "measured" and fast["ttft_p50_ns"] < fast["p50_ns"]


def test_coe_serve_on_the_sample_trace_reports_ttft_tpot_p99_goodput(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "run" / "coe_serve_cdf.png"
    rc = main(["coe-serve", "--backend", "local", "--trace", str(SAMPLE), "--experts", "16",
               "--policies", "lru,lfu", "--slo-ttft-ms", "50", "--no-progress", "--out", str(tmp_path / "run"),
               "--json", str(tmp_path / "serve.json")])
    out = capsys.readouterr().out
    assert rc == 0
    for col in ("TTFT p99 ms", "TPOT mean ms", "p99 ms", "goodput req/s", "mean ms"):
        assert col in out
    assert plot.stat().st_size > 0
    import json

    rows = json.loads((tmp_path / "serve.json").read_text())["rows"]
    assert [r["policy"] for r in rows] == ["lru", "lfu"]
    assert all(r["completed"] == 200 and r["goodput_per_s"] > 0 for r in rows)


def test_a_bad_trace_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,expert,prompt_tokens\n0,1,5\n")
    assert main(["coe-serve", "--backend", "local", "--trace", str(bad), "--no-progress"]) == 2


def test_interpolated_costs_between_grid_points() -> None:
    from sn40l_emu.coe.fleet_costs import NodeCosts

    c = NodeCosts("hand", 1, (0, 5), (0, 7), (), (100, 200), (1000, 2000), (10, 20), 64, 64, False, 10,
                  False, 1, True)
    # prefill(150) = 1500; decode at contexts 150, 151 = 15 + 15.1 -> 15 + 15 (whole ns each)
    assert c.request_ns(150, 3) == (1500, 1530)
    assert c.request_ns(100, 1) == (1000, 1000)  # on a grid point: the measured value
    exact = NodeCosts("hand", 1, (0, 5), (0, 7), ((8, 2, 80, 95),), (), (), (), 64, 64, False, 10,
                      False, 1, False)
    assert exact.request_ns(8, 2) == (80, 95)
    with pytest.raises(ConfigError):
        exact.request_ns(9, 2)  # a shape that was never measured
