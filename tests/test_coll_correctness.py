"""Every algorithm x op x dtype x group gives numpy's answer (rank-tagged and random data).

Tolerance: float32 and the integer dtypes are compared exactly for rank-tagged
data; for random data float32 within 1e-5 of sum|x|, float16/bfloat16 within
N * eps(dtype) * sum|x| (a ring rounds partial sums to the data dtype once
per hop; see sn40l_emu.collectives.reduction). max/min are always exact.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from sn40l_emu.collectives import all_gather, all_reduce, broadcast, reduce_scatter
from sn40l_emu.errors import FrameError
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.p2p.inproc import run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import Algo, ReduceOp
from sn40l_emu.units import GB

PARAMS = P2PParams(
    TopologyKind.FULL_MESH,
    LinkParams(50 * GB, 1_000),
    100,
    1 << 30,
    0,
    5.0,
    LinkParams(25 * GB, 3_000),
)
DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
}
EPS = {"float32": 1e-6, "float16": 2.0**-10, "bfloat16": 2.0**-7, "int32": 0.0, "int64": 0.0}
GROUPS = [tuple(range(8)), (4, 5, 6, 7), (0, 1), (1, 2, 5)]
# float16 takes the code path of bfloat16 (16-bit, float32 accumulation) and int64 that of int32:
# make test runs them, make test-fast leaves them out
DTYPE_PARAMS = [pytest.param(d, marks=pytest.mark.slow) if d in ("float16", "int64") else d for d in DTYPES]
ALGOS = [Algo.RING, Algo.ONESHOT, Algo.TREE]
# rank-tagged data ((rank + 1) * ones) for sums, random data for every op
CASES = [(ReduceOp.SUM, False)] + [(op, True) for op in ReduceOp]
SHAPE = (5, 7)  # 35 elements: segments and chunks do not divide evenly


def _data(rank: int, dtype: str, random: bool, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    if not random:
        return np.full(shape, rank + 1, dtype=DTYPES[dtype])
    rng = np.random.default_rng(1000 + rank)
    if dtype.startswith("int"):
        return rng.integers(-1000, 1000, shape).astype(DTYPES[dtype])
    return rng.standard_normal(shape).astype(DTYPES[dtype])


def _reference(op: ReduceOp, parts: list[np.ndarray]) -> np.ndarray:
    stack = np.stack([p.astype(np.float64) for p in parts])
    return {ReduceOp.SUM: stack.sum(0), ReduceOp.MAX: stack.max(0), ReduceOp.MIN: stack.min(0)}[op]


def _check(
    got: np.ndarray, ref: np.ndarray, parts: list[np.ndarray], dtype: str, op: ReduceOp
) -> None:
    assert got.dtype == DTYPES[dtype] and got.shape == ref.shape
    if op is not ReduceOp.SUM or dtype.startswith("int"):
        np.testing.assert_array_equal(got.astype(np.float64), ref)
        return
    scale = np.sum([np.abs(p.astype(np.float64)) for p in parts], axis=0)
    tol = (10 if dtype == "float32" else len(parts)) * EPS[dtype] * scale + 1e-30
    assert np.all(np.abs(got.astype(np.float64) - ref) <= tol)


def _arrays(out: list[tuple[Tensor, int]]) -> list[np.ndarray]:
    arrays = [got for got, _ in out]
    assert all(isinstance(a, np.ndarray) for a in arrays)
    return arrays  # type: ignore[return-value]


def _chunks(algo: Algo, k: int) -> int:
    return 0 if algo is Algo.AUTO else k


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("op", "random"), CASES)
@pytest.mark.parametrize("algo", ALGOS)
def test_all_reduce(
    algo: Algo, op: ReduceOp, random: bool, dtype: str, group: tuple[int, ...]
) -> None:
    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = _data(t.rank, dtype, random)
        return await all_reduce(t, group, mine, 0, op=op, algo=algo, chunks=_chunks(algo, 3))

    parts = [_data(r, dtype, random) for r in group]
    ref = _reference(op, parts)
    results = _arrays(run_group(group, body, PARAMS))
    for got in results:
        _check(got, ref, parts, dtype, op)
        assert got.tobytes() == results[0].tobytes()  # bitwise identical on every rank


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("op", "random"), CASES)
@pytest.mark.parametrize("algo", ALGOS)
def test_reduce_scatter(
    algo: Algo, op: ReduceOp, random: bool, dtype: str, group: tuple[int, ...]
) -> None:
    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = _data(t.rank, dtype, random)
        return await reduce_scatter(t, group, mine, 0, op=op, algo=algo, chunks=_chunks(algo, 2))

    parts = [_data(r, dtype, random) for r in group]
    ref = np.array_split(_reference(op, parts).reshape(-1), len(group))
    flat_parts = [np.array_split(p.reshape(-1), len(group)) for p in parts]
    for i, got in enumerate(_arrays(run_group(group, body, PARAMS))):
        _check(got, ref[i], [fp[i] for fp in flat_parts], dtype, op)


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("algo", ALGOS)
def test_all_gather(algo: Algo, dtype: str, group: tuple[int, ...]) -> None:
    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = _data(t.rank, dtype, True, (3, 2))
        return await all_gather(t, group, mine, 0, algo=algo, chunks=_chunks(algo, 2))

    ref = np.concatenate([_data(r, dtype, True, (3, 2)) for r in group])
    for got in _arrays(run_group(group, body, PARAMS)):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("group", GROUPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("algo", ALGOS)
def test_broadcast(algo: Algo, dtype: str, group: tuple[int, ...]) -> None:
    root = group[-1]

    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = _data(t.rank, dtype, True) if t.rank == root else np.zeros(SHAPE, DTYPES[dtype])
        return await broadcast(t, group, mine, 0, root=root, algo=algo, chunks=_chunks(algo, 3))

    for got in _arrays(run_group(group, body, PARAMS)):
        np.testing.assert_array_equal(got, _data(root, dtype, True))


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_auto_selection_is_correct(group: tuple[int, ...]) -> None:
    async def body(t: Transport) -> list[np.ndarray]:
        mine = _data(t.rank, "bfloat16", False)
        ar, _ = await all_reduce(t, group, mine, 0, tag=1)
        rs, _ = await reduce_scatter(t, group, mine, 0, tag=2)
        ag, _ = await all_gather(t, group, mine, 0, tag=3)
        bc, _ = await broadcast(t, group, mine, 0, root=group[0], tag=4)
        return [np.asarray(x) for x in (ar, rs, ag, bc)]

    total = sum(r + 1 for r in group)
    gathered = np.concatenate([_data(r, "bfloat16", False) for r in group])
    for i, (ar, rs, ag, bc) in enumerate(run_group(group, body, PARAMS)):
        assert np.array_equal(ar, np.full(SHAPE, total))
        assert np.array_equal(rs, np.array_split(np.full(35, total), len(group))[i])
        assert np.array_equal(ag, gathered)
        assert np.array_equal(bc, _data(group[0], "bfloat16", False))


def test_inputs_are_not_modified_and_results_are_private() -> None:
    group = (0, 1, 2, 3)
    inputs = {r: np.full(8, float(r), np.float32) for r in group}

    async def body(t: Transport) -> tuple[Tensor, int]:
        return await all_reduce(t, group, inputs[t.rank], 0, algo=Algo.RING, chunks=2)

    results = _arrays(run_group(group, body, PARAMS))
    for r in group:
        np.testing.assert_array_equal(inputs[r], np.full(8, float(r), np.float32))
    results[0][0] = 99.0
    assert results[1][0] == 6.0


def test_more_chunks_than_elements_and_single_rank() -> None:
    group = tuple(range(8))

    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = np.full(3, t.rank + 1.0, np.float32)
        return await all_reduce(t, group, mine, 0, algo=Algo.RING, chunks=4)

    assert all(
        np.array_equal(got, np.full(3, 36.0)) for got in _arrays(run_group(group, body, PARAMS))
    )
    (solo,) = run_group((5,), lambda t: all_reduce(t, (5,), np.ones(4, np.float32), 77), PARAMS)
    assert solo[1] == 77 and np.array_equal(np.asarray(solo[0]), np.ones(4))


def test_two_node_group_tp16() -> None:
    group = tuple(range(16))

    async def body(t: Transport) -> tuple[Tensor, int]:
        mine = np.full(64, t.rank + 1, np.int64)
        return await all_reduce(t, group, mine, 0, algo=Algo.RING, chunks=2)

    assert all(
        np.array_equal(got, np.full(64, 136)) for got in _arrays(run_group(group, body, PARAMS))
    )


def test_mismatched_modes_and_bad_groups_are_refused() -> None:
    group = (0, 1)

    async def mixed(t: Transport) -> object:
        data = np.ones(4, np.float32) if t.rank == 0 else SymbolicTensor((4,), "float32")
        return await all_reduce(t, group, data, 0, algo=Algo.ONESHOT, chunks=1)

    with pytest.raises(FrameError):
        run_group(group, mixed, PARAMS)
    with pytest.raises(ValueError, match="not in group"):
        run_group((0, 1), lambda t: all_reduce(t, (2, 3), np.ones(2, np.float32), 0), PARAMS)
