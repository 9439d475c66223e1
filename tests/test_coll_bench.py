"""nccl-tests parity: `coll-bench` / `allgather-bench` / `reducescatter-bench` / `broadcast-bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sn40l_emu.cli import main
from sn40l_emu.experiments.coll_bench import bus_factor, counts, header, wrong_elements
from sn40l_emu.program import ReduceOp


def _bench(tmp_path: Path, cmd: str, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    out = tmp_path / "bench.json"
    code = main([cmd, "--backend", "local", *args, "--json", str(out)])
    if not out.exists():
        return code, [], {}
    doc = json.loads(out.read_text())
    return code, doc["rows"], doc["config"]


def test_bus_factors_are_nccl_tests() -> None:
    assert bus_factor("allreduce", 8) == pytest.approx(1.75)
    assert bus_factor("allgather", 8) == pytest.approx(0.875)
    assert bus_factor("reducescatter", 4) == pytest.approx(0.75)
    assert bus_factor("broadcast", 8) == 1.0


def test_counts_follow_nccl_tests_byte_counts() -> None:
    # all_gather: each rank sends count/n, receives all; the count column is the per-rank part
    c = counts("allgather", 1024, 4, 8)
    assert (c.send, c.recv, c.param) == (32, 256, 32)
    c = counts("reducescatter", 1024, 4, 8)
    assert (c.send, c.recv, c.param) == (256, 32, 32)
    c = counts("broadcast", 1024, 2, 8)
    assert (c.send, c.recv, c.param) == (512, 512, 512)


@pytest.mark.parametrize(("cmd", "factor", "redop", "root"), [
    ("allgather-bench", 7 / 8, "none", -1),
    ("reducescatter-bench", 7 / 8, "sum", -1),
    ("broadcast-bench", 1.0, "none", 3),
])
@pytest.mark.slow
def test_real_data_both_columns_right(tmp_path: Path, cmd: str, factor: float, redop: str, root: int,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, cfg = _bench(tmp_path, cmd, "-b", "1K", "-e", "256K", "-f", "16", "--root", "3",
                             "-n", "1", "-w", "0")
    assert code == 0 and cfg["check"]
    assert [r["size_bytes"] for r in rows] == [1024, 16384, 262144]
    for r in rows:
        assert (r["redop"], r["root"], r["dtype"]) == (redop, root, "float32")
        for col in ("out_of_place", "in_place"):
            res = r[col]
            assert res["wrong"] == 0
            assert res["algbw_gbps"] == pytest.approx(r["size_bytes"] / (res["time_us"] * 1e3))
            assert res["busbw_gbps"] == pytest.approx(res["algbw_gbps"] * factor)
    per_rank = {"allgather-bench": 1024 // 4 // 8, "reducescatter-bench": 1024 // 4 // 8,
                "broadcast-bench": 1024 // 4}[cmd]
    assert rows[0]["count"] == per_rank
    text = capsys.readouterr().out
    assert "out-of-place" in text and "in-place" in text and "Out of bounds values : 0 OK" in text


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("op", ["sum", "min"])
def test_reductions_in_16_bit_and_max_min(tmp_path: Path, dtype: str, op: str) -> None:
    for cmd in ("reducescatter-bench",):
        code, rows, _ = _bench(tmp_path, cmd, "-b", "512", "-e", "8K", "-f", "16", "--dtype", dtype,
                               "--op", op, "--algo", "ring", "-n", "1", "-w", "0")
        assert code == 0
        assert all(r[c]["wrong"] == 0 for r in rows for c in ("out_of_place", "in_place"))
    code, rows, _ = _bench(tmp_path, "coll-bench", "--coll", "allreduce", "-b", "64", "-e", "4K", "-f", "64",
                           "--dtype", dtype, "--op", op, "-n", "1", "-w", "0")
    assert code == 0 and all(r["in_place"]["wrong"] == 0 for r in rows)


@pytest.mark.slow
def test_timing_only_says_not_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, cfg = _bench(tmp_path, "coll-bench", "--coll", "allgather", "--timing-only", "-b", "1G", "-e", "1G",
                             "--algo", "ring", "-n", "1", "-w", "0")
    assert code == 0 and cfg["timing_only"]
    assert rows[0]["out_of_place"]["wrong"] is None and rows[0]["in_place"]["wrong"] is None
    # a ring all-gather of 1 GiB moves (n-1)/n of it over one 50 GB/s link: busbw near the link rate
    assert rows[0]["out_of_place"]["busbw_gbps"] >= 0.95 * 50
    out = capsys.readouterr().out
    data = [line for line in out.splitlines() if line.strip() and not line.startswith("#")]
    assert data and all(line.split()[8] == "N/A" and line.split()[12] == "N/A" for line in data)
    assert "Out of bounds values : N/A" in out and "0 OK" not in out


@pytest.mark.slow
def test_allreduce_bench_timing_only_no_longer_claims_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["allreduce-bench", "--backend", "local", "--timing-only", "-b", "1M", "-e", "1M", "-n", "1",
                 "-w", "0"]) == 0
    out = capsys.readouterr().out
    assert "Out of bounds values : N/A" in out and "0 OK" not in out


def test_header_has_nccl_tests_columns() -> None:
    names = header().splitlines()[1].lstrip("#").split()
    assert names == ["size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
                     "time", "algbw", "busbw", "#wrong"]


def test_wrong_elements_catches_a_bad_result() -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(16).astype(np.float32) for _ in range(4)]
    good = np.concatenate(inputs)
    assert wrong_elements("allgather", good, inputs, 0, ReduceOp.SUM, "float32", 0) == 0
    bad = good.copy()
    bad[[3, 40]] += 1.0
    assert wrong_elements("allgather", bad, inputs, 0, ReduceOp.SUM, "float32", 0) == 2
    piece = np.array_split(np.sum(inputs, axis=0), 4)[2]
    assert wrong_elements("reducescatter", piece, inputs, 2, ReduceOp.SUM, "float32", 0) == 0
    assert wrong_elements("reducescatter", piece + 1, inputs, 2, ReduceOp.SUM, "float32", 0) == piece.size
    assert wrong_elements("broadcast", inputs[1], inputs, 0, ReduceOp.SUM, "float32", 1) == 0
    assert wrong_elements("broadcast", inputs[0], inputs, 0, ReduceOp.SUM, "float32", 1) == 16


@pytest.mark.slow
def test_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench(tmp_path, "broadcast-bench", "--root", "8")[0] == 2
    assert _bench(tmp_path, "allgather-bench", "-b", "1M", "-e", "1K")[0] == 2
    assert _bench(tmp_path, "reducescatter-bench", "--sockets", "9")[0] == 2
    assert "--root" in capsys.readouterr().err
