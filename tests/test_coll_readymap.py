"""ReadyMap against a per-element reference, and the reduction helpers."""

from __future__ import annotations

from itertools import pairwise

import ml_dtypes
import numpy as np
import pytest

from sn40l_emu.collectives.readymap import ReadyMap
from sn40l_emu.collectives.reduction import combine, reduce_ordered
from sn40l_emu.p2p.transport import chunk_bounds
from sn40l_emu.program import ReduceOp


def _ref_chunk_ready(elems: np.ndarray, lo: int, hi: int, k: int) -> list[int]:
    cb = lo + chunk_bounds(hi - lo, k)
    out = []
    for a, b in pairwise(cb):
        out.append(int(elems[a:b].max()) if b > a else int(elems[min(a, elems.size - 1)]))
    return out


@pytest.mark.parametrize("seed", range(25))
def test_readymap_matches_per_element_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 300))
    start = int(rng.integers(0, 50))
    rm = ReadyMap(size, start)
    elems = np.full(size, start, dtype=np.int64)
    for _ in range(12):
        lo = int(rng.integers(0, size))
        hi = int(rng.integers(lo, size + 1))
        k = int(rng.integers(1, 9))
        assert rm.chunk_ready(lo, hi, k).tolist() == _ref_chunk_ready(elems, lo, hi, k)
        arrive = np.sort(rng.integers(0, 1000, k))
        rm.update(lo, hi, k, arrive)
        cb = lo + chunk_bounds(hi - lo, k)
        for i in range(k):
            elems[cb[i] : cb[i + 1]] = np.maximum(elems[cb[i] : cb[i + 1]], arrive[i])
        assert rm.max_over(0, size) == int(elems.max())
    assert rm.pieces <= size


def test_readymap_empty_buffer_and_bounds() -> None:
    rm = ReadyMap(0, 5)
    assert rm.chunk_ready(0, 0, 3).tolist() == [5, 5, 5]
    rm.update(0, 0, 2, np.array([7, 9]))
    assert rm.max_over(0, 0) == 9
    with pytest.raises(ValueError):
        ReadyMap(4, 0).chunk_ready(2, 5, 1)
    with pytest.raises(ValueError):
        ReadyMap(4, 0).update(0, 4, 2, np.array([1]))


def test_half_precision_accumulates_in_float32() -> None:
    bf = ml_dtypes.bfloat16
    a = np.array([256.0], dtype=bf)
    ones = [np.array([1.0], dtype=bf)] * 4
    # adding 1 four times to 256 one by one in bfloat16 would stay at 256
    assert float(reduce_ordered(ReduceOp.SUM, [a, *ones])[0]) == 260.0
    assert combine(
        ReduceOp.MAX, np.array([1, 5], np.int32), np.array([3, 2], np.int32)
    ).tolist() == [3, 5]
    assert combine(ReduceOp.MIN, a, np.array([3.0], bf)).dtype == np.dtype(bf)
