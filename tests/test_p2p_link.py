"""Link timing: the vectorised FIFO against a plain loop, serialization, timed changes."""

from __future__ import annotations

import numpy as np
import pytest

from sn40l_emu.fabric.link import Link, fifo_serve, serialization_ns
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.units import GB, transfer_ns


def _loop_reference(
    ready: list[int], ser: list[int], free: int
) -> tuple[list[int], list[int], int]:
    start, done = [], []
    for r, s in zip(ready, ser, strict=True):
        begin = max(r, free)
        free = begin + s
        start.append(begin)
        done.append(free)
    return start, done, free


@pytest.mark.parametrize("seed", range(20))
def test_fifo_serve_matches_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 200))
    ready = rng.integers(0, 10_000, k)
    if seed % 2:
        ready = np.sort(ready)
    ser = rng.integers(0, 500, k)
    free = int(rng.integers(0, 12_000))
    start, done, new_free = fifo_serve(ready, ser, free)
    ref_start, ref_done, ref_free = _loop_reference(ready.tolist(), ser.tolist(), free)
    assert start.tolist() == ref_start and done.tolist() == ref_done and new_free == ref_free


def test_fifo_serve_empty_and_shape_check() -> None:
    start, done, free = fifo_serve(np.zeros(0, np.int64), np.zeros(0, np.int64), 42)
    assert start.size == done.size == 0 and free == 42
    with pytest.raises(ValueError):
        fifo_serve(np.zeros(2, np.int64), np.zeros(3, np.int64), 0)


def test_serialization_is_exact_for_huge_chunks() -> None:
    sizes = np.array([10**12, 10**12, 10**12 - 1], dtype=np.int64)  # bytes * 1e9 overflows int64
    got = serialization_ns(sizes, 50 * GB, 7)
    assert got.tolist() == [transfer_ns(int(s), 50 * GB) + 7 for s in sizes]


def test_link_serves_back_to_back_frames() -> None:
    link = Link(0, 1, LinkParams(1 * GB, 100))  # 1 byte per ns
    a = link.serve(np.array([10, 10]), np.array([0, 0]), 5)
    assert a.tolist() == [115, 130] and link.free_ns == 30
    b = link.serve(np.array([10]), np.array([0]), 5)  # waits for the link
    assert b.tolist() == [145]


def test_param_change_applies_from_first_chunk_ready_time() -> None:
    link = Link(0, 1, LinkParams(1 * GB, 100))
    link.set_params(LinkParams(GB // 2, 300), from_ns=1_000)
    assert link.params_at(999).latency_ns == 100 and link.params_at(1_000).latency_ns == 300
    # first chunk ready before the change: the whole frame keeps the old parameters
    early = link.serve(np.array([10, 10]), np.array([990, 1_500]), 0)
    assert early.tolist() == [1_100, 1_610]
    late = link.serve(np.array([10]), np.array([2_000]), 0)
    assert late.tolist() == [2_000 + 20 + 300]
    with pytest.raises(ValueError):
        link.set_params(LinkParams(0, 1), 0)


def test_down_and_up_are_timed() -> None:
    link = Link(0, 1, LinkParams(GB, 1))
    link.set_down(True, 100)
    link.set_down(False, 200)
    assert [link.is_down_at(t) for t in (0, 99, 100, 199, 200, 10**9)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]
