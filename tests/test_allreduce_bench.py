"""`sn40l-emu allreduce-bench`: nccl-tests-shaped rows, correct results, the bandwidth formulas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sn40l_emu.cli import main
from sn40l_emu.experiments.allreduce_bench import bus_factor, sizes_bytes

# CLI sweeps with real data: the slow tier
pytestmark = pytest.mark.slow


def _bench(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    out = tmp_path / "bench.json"
    code = main(["allreduce-bench", *args, "--json", str(out)])
    if not out.exists():
        return code, [], {}
    doc = json.loads(out.read_text())
    return code, doc["rows"], doc["config"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("algo", ["ring", "oneshot", "tree"])
def test_local_results_are_right(tmp_path: Path, algo: str, op: str, dtype: str) -> None:
    code, rows, cfg = _bench(tmp_path, "--backend", "local", "-b", "8", "-e", "96K", "-f", "12", "--algo", algo,
                             "--op", op, "--dtype", dtype, "-n", "1", "-w", "0")
    assert code == 0 and cfg["check"]
    assert [r["size_bytes"] for r in rows] == [8, 96, 1152, 13824]
    assert all(r["wrong"] == 0 and r["algo"] == algo and r["dtype"] == dtype for r in rows)
    itemsize = 4 if dtype == "float32" else 2
    assert all(r["count"] * itemsize == r["size_bytes"] for r in rows)


def test_row_fields_and_bandwidth_definitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, _ = _bench(tmp_path, "--backend", "local", "-b", "1K", "-e", "1M", "-f", "32", "--sockets", "4")
    assert code == 0
    keys = {"size_bytes", "count", "dtype", "algo", "chunks", "time_us", "algbw_gbps", "busbw_gbps", "wrong",
            "wall_us"}
    for r in rows:
        assert set(r) == keys
        assert r["algbw_gbps"] == pytest.approx(r["size_bytes"] / (r["time_us"] * 1e3))
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * 2 * 3 / 4)
        assert r["algo"] == "oneshot" and r["wall_us"] > 0  # auto on a full mesh
    text = capsys.readouterr().out
    assert "busbw" in text and "one-shot at every size" in text and "Out of bounds values : 0 OK" in text
    assert bus_factor(8) == 1.75 and sizes_bytes(8, 64, 2) == [8, 16, 32, 64]


def test_timing_only_one_gib_ring_reaches_the_link_rate(tmp_path: Path) -> None:
    code, rows, cfg = _bench(tmp_path, "--backend", "local", "--timing-only", "-b", "1G", "-e", "4G", "-f", "4",
                             "--algo", "ring", "--chunks", "2", "-n", "1", "-w", "0")
    assert code == 0 and not cfg["check"]
    assert [r["size_bytes"] for r in rows] == [1 << 30, 1 << 32]
    assert all(r["wrong"] is None and r["busbw_gbps"] >= 0.95 * 50 for r in rows)


def test_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench(tmp_path, "--backend", "local", "--sockets", "9")[0] == 2
    assert _bench(tmp_path, "--backend", "local", "-b", "1M", "-e", "1K")[0] == 2
    assert _bench(tmp_path, "--backend", "local", "-e", "64X")[0] == 2
    assert "--sockets" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_backend(tmp_path: Path, ray_session: None) -> None:
    code, rows, _ = _bench(tmp_path, "-b", "4K", "-e", "1M", "-f", "256", "--algo", "ring", "-n", "1", "-w", "0")
    assert code == 0
    assert [r["size_bytes"] for r in rows] == [4096, 1 << 20]
    assert all(r["wrong"] == 0 for r in rows)
