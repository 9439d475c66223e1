"""The result pool reuses a result's memory only once nothing views it any more."""

from __future__ import annotations

import gc

import numpy as np

from sn40l_emu.collectives.result_pool import ResultPool

MIB = 1024 * 1024


def test_memory_comes_back_only_when_every_view_is_gone() -> None:
    pool = ResultPool(min_bytes=MIB, max_free_bytes=8 * MIB)
    first = pool.empty(MIB, np.dtype(np.float32))  # 4 MiB
    first[:] = 7.0
    address = first.ctypes.data
    kept = first.reshape(2, -1)[1, 10:20]  # a view of a view keeps the memory alive
    del first
    gc.collect()
    assert pool.free_bytes == 0
    other = pool.empty(MIB, np.dtype(np.float32))
    assert other.ctypes.data != address  # not handed out twice
    other[:] = 1.0
    assert np.all(kept == 7.0)  # and never written by the next user
    del kept
    gc.collect()
    assert pool.free_bytes == 4 * MIB
    again = pool.empty(MIB, np.dtype(np.float32))
    assert again.ctypes.data == address and pool.free_bytes == 0  # warm memory reused
    assert again.dtype == np.float32 and again.shape == (MIB,) and again.flags.writeable


def test_small_results_and_a_full_pool_are_left_to_numpy() -> None:
    pool = ResultPool(min_bytes=MIB, max_free_bytes=4 * MIB)
    small = pool.empty(16, np.dtype(np.int64))
    assert small.flags.owndata  # plain np.empty
    a, b = pool.empty(MIB, np.dtype(np.float32)), pool.empty(MIB, np.dtype(np.float32))
    del a, b
    gc.collect()
    assert pool.free_bytes == 4 * MIB  # one kept, the other dropped (over max_free_bytes)
