"""Plots answer the question: the DGX cliff is broken and marked, the cache state is stated,
compared charts share a scale, confidence intervals are drawn when rows carry them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest

from sn40l_emu.experiments import plots_coe
from sn40l_emu.experiments.plots_coe import breakdown_per_platform, hbm_edge, latency_vs_experts, start_state


def _row(platform: str, experts: int, total_ms: float, *, slots: int, oom: bool = False,
         ci_ms: float | None = None) -> dict[str, Any]:
    ns = int(total_ms * 1e6)
    r: dict[str, Any] = {"platform": platform, "experts": experts, "batch": 8, "tokens": 20, "oom": oom,
                         "total_ns": 0 if oom else ns, "router_ns": 0 if oom else ns // 10,
                         "switch_ns": 0 if oom else ns // 5, "expert_ns": 0 if oom else ns - ns // 10 - ns // 5,
                         "experts_in_hbm_at_once": slots}
    if ci_ms is not None:
        r["total_ci95_ns"] = int(ci_ms * 1e6)
    return r


ROWS = [
    *[_row("sn40l", n, 300.0, slots=39) for n in (1, 25, 50, 150)],
    *[_row("dgx-a100", n, 850.0 if n <= 49 else 3800.0, slots=49) for n in (1, 25, 50, 150)],
    _row("dgx-a100", 170, 0.0, slots=49, oom=True),
]


def test_start_state_says_where_experts_start() -> None:
    text = start_state(ROWS)
    assert "sn40l: every expert in DDR; HBM cache of 39 experts, cold at the start" in text
    assert "dgx-a100: all experts preloaded in GPU HBM up to 49" in text
    assert hbm_edge([r for r in ROWS if r["platform"] == "dgx-a100"]) == 49


@pytest.mark.slow  # renders PNGs (seconds each): make test, not make test-fast
def test_latency_plot_breaks_the_line_at_the_cliff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple[str, list[int]]] = []
    real = plots_coe._plt()

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def subplots(self, *a: Any, **k: Any) -> Any:
            fig, ax = real.subplots(*a, **k)
            orig = ax.errorbar

            def errorbar(xs: list[int], ys: list[float], **kw: Any) -> Any:
                drawn.append((kw.get("label", ""), list(xs)))
                return orig(xs, ys, **kw)

            ax.errorbar = errorbar
            return fig, ax

    monkeypatch.setattr(plots_coe, "_plt", lambda: Spy())
    (png,) = latency_vs_experts(ROWS, tmp_path)
    assert png.name == "coe_latency_b8_t20.png" and mpimg.imread(png).shape[0] > 400
    segs = dict(drawn)
    # no single line joins 25 (in GPU HBM) and 50 (host DRAM): two segments on each side of 49
    assert segs["dgx-a100 (experts in GPU HBM)"] == [1, 25]
    assert segs["dgx-a100 (experts in host DRAM)"] == [50, 150]
    assert segs["sn40l (experts in DDR, HBM cache)"] == [1, 25, 50, 150]


@pytest.mark.slow  # renders PNGs (seconds each): make test, not make test-fast
def test_breakdowns_share_one_scale_and_draw_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [dict(r, total_ci95_ns=int(50e6)) for r in ROWS if not r["oom"]]
    limits: list[tuple[float, float]] = []
    errbars: list[str] = []
    real = plots_coe._plt()
    orig_savefig = real.Figure.savefig

    def savefig(fig: Any, path: Any, **kw: Any) -> Any:
        for ax in fig.axes:
            limits.append(ax.get_ylim())
            errbars.extend(type(c).__name__ for c in ax.containers)
        return orig_savefig(fig, path, **kw)

    monkeypatch.setattr(real.Figure, "savefig", savefig)
    pngs = breakdown_per_platform(rows, tmp_path, 8, 20)
    assert sorted(p.name for p in pngs) == ["coe_breakdown_b8_t20.png", "coe_breakdown_dgx-a100_b8_t20.png",
                                            "coe_breakdown_sn40l_b8_t20.png"]
    assert len(set(limits)) == 1  # every chart, every panel: one y-scale
    assert limits[0][1] >= (3800 + 50)  # the largest total and its interval fit
    assert "ErrorbarContainer" in errbars


@pytest.mark.slow  # renders PNGs (seconds each): make test, not make test-fast
def test_inject_timeline_integer_batches_from_zero_and_the_recovery(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sn40l_emu.experiments.plots_inject import inject_timeline

    rows = [{"batch": k, "status": "completed", "total_ns": 293_000_000, "requests": list(range(8))}
            for k in range(4)]
    event = SimpleNamespace(kind="kill_socket", requests_done_at_apply=8, recovery_ns=2_727_000_000)
    report = SimpleNamespace(rows=rows, events=[event], scenario="kill socket 3")
    seen: dict[str, Any] = {}
    real = plots_coe._plt()
    orig_savefig = real.Figure.savefig

    def savefig(fig: Any, path: Any, **kw: Any) -> Any:
        ax = fig.axes[0]
        seen["xticks"] = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        seen["ylim"] = ax.get_ylim()
        seen["hatched"] = [(p.get_x() + p.get_width() / 2, p.get_y(), p.get_height()) for p in ax.patches
                           if p.get_hatch()]
        return orig_savefig(fig, path, **kw)

    monkeypatch.setattr(real.Figure, "savefig", savefig)
    png = inject_timeline(report, tmp_path)
    assert png.exists()
    assert seen["xticks"] == [0, 1, 2, 3] and seen["ylim"][0] == 0
    # the recovery sits on batch 1 (the first after 8 requests), on top of its latency
    (x, bottom, height), = seen["hatched"]
    assert x == pytest.approx(1) and bottom == pytest.approx(293) and height == pytest.approx(2727)
