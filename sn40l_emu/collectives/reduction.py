"""Element-wise reduction of collective payloads.

float16 and bfloat16 are accumulated in float32 and cast back once per
reduction call (SN40L PCUs reduce in fp32 inside the streaming kernel). A
ring passes partial results between ranks in the data dtype, so a ring
result is rounded once per hop (N-1 roundings), a one-shot result once: for
data of magnitude ~1 expect |error| <= N * eps(dtype) * sum|x| -- the
tolerance the tests use. Integer dtypes reduce exactly in their own dtype.

The reduction itself costs 0 ns of virtual time: on SN40L it is fused into
the streaming kernel on the PCUs and hidden under the link transfer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sn40l_emu.program import ReduceOp

UFUNCS: dict[ReduceOp, Callable[..., np.ndarray]] = {
    ReduceOp.SUM: np.add,
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
}


def accumulate_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for the 16-bit floats (float16, ml_dtypes.bfloat16), the dtype itself otherwise."""
    if dtype.itemsize == 2 and not np.issubdtype(dtype, np.integer):
        return np.dtype(np.float32)
    return dtype


def combine(op: ReduceOp, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``op(a, b)`` element-wise in the accumulation dtype, cast back to ``a.dtype``."""
    acc = accumulate_dtype(a.dtype)
    return UFUNCS[op](a.astype(acc), b.astype(acc)).astype(a.dtype)


def combine_into(op: ReduceOp, acc: np.ndarray, b: np.ndarray) -> None:
    """``acc = op(acc, b)`` in place; no temporaries when ``acc`` is already its accumulation dtype.

    Bit-identical to :func:`combine` (same ufunc, same order); it only avoids
    the full-size copies that dominated a large ring all-reduce's wall time.
    """
    if accumulate_dtype(acc.dtype) == acc.dtype:
        UFUNCS[op](acc, b, out=acc)
    else:
        acc[...] = combine(op, acc, b)


def combine_to(op: ReduceOp, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = op(a, b)``: :func:`combine_into` with the result written elsewhere (same bits).

    Lets a ring reduce its untouched input and a received chunk straight into
    the buffer it sends next, without copying the input first.
    """
    if accumulate_dtype(a.dtype) == a.dtype:
        UFUNCS[op](a, b, out=out)
    else:
        out[...] = combine(op, a, b)


def reduce_ordered(op: ReduceOp, parts: Sequence[np.ndarray]) -> np.ndarray:
    """Reduce ``parts`` left to right (a fixed order, so every rank gets identical bits)."""
    dtype = parts[0].dtype
    acc = parts[0].astype(accumulate_dtype(dtype))
    ufunc = UFUNCS[op]
    for part in parts[1:]:
        acc = ufunc(acc, part.astype(acc.dtype))
    return acc.astype(dtype)
