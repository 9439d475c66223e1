"""The batched in-process ring (collectives.batched) equals the frame path, bit for bit and ns for ns.

The frame path is forced by taking the transports' rendezvous away; both run
the same calls (several in a row, so link FIFO state carries over) on the
same wiring, with per-rank start times, injected link changes, multi-hop
topologies and a multi-node group.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sn40l_emu.collectives import all_gather, all_reduce, reduce_scatter
from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.p2p.inproc import make_inproc_transports, run_group
from sn40l_emu.p2p.transport import SymbolicTensor, Tensor, Transport
from sn40l_emu.program import Algo, ReduceOp
from sn40l_emu.units import GB

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

KINDS = {"all_reduce": all_reduce, "reduce_scatter": reduce_scatter, "all_gather": all_gather}
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "int32": np.int32}


def _params(kind: TopologyKind) -> P2PParams:
    return P2PParams(kind, LinkParams(50 * GB, 1_000), 100, 1 << 30, 0, 5.0, LinkParams(25 * GB, 3_000))


def _run(
    batched: bool,
    kind: str,
    group: tuple[int, ...],
    make: Callable[[int, int], Tensor],
    topo: TopologyKind,
    chunks: int,
    calls: int,
    inject: Callable[[NetworkView], None] | None,
    n_sockets: int,
    algo: Algo = Algo.RING,
) -> list[list[tuple[object, int]]]:
    params = _params(topo)
    transports = make_inproc_transports(group, params, n_sockets=n_sockets)
    for t in transports.values():
        if not batched:
            t.rendezvous = None
        if inject is not None:
            inject(t.network)
    fn = KINDS[kind]

    async def body(t: Transport) -> list[tuple[object, int]]:
        out = []
        start = 7 * t.rank  # ranks start at different times
        for c in range(calls):
            kwargs = {"op": ReduceOp.SUM} if kind != "all_gather" else {}
            res, end = await fn(t, group, make(t.rank, c), start, algo=algo, chunks=chunks,
                                tag=c, **kwargs)
            out.append((res, end))
            start = end + 11 * t.rank
        return out

    return run_group(group, body, params, transports=transports, n_sockets=n_sockets)


def _same(a: list[list[tuple[object, int]]], b: list[list[tuple[object, int]]]) -> None:
    for ra, rb in zip(a, b, strict=True):
        for (xa, ea), (xb, eb) in zip(ra, rb, strict=True):
            assert ea == eb
            if isinstance(xa, np.ndarray):
                assert isinstance(xb, np.ndarray)
                assert xa.dtype == xb.dtype and xa.shape == xb.shape
                assert xa.tobytes() == xb.tobytes()
            else:
                assert xa == xb


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    n=st.integers(2, 10),
    per_rank=st.integers(1, 300),
    chunks=st.integers(1, 5),
    dtype=st.sampled_from(sorted(DTYPES)),
    topo=st.sampled_from(list(TopologyKind)),
    symbolic=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_batched_ring_equals_frame_path(
    kind: str, n: int, per_rank: int, chunks: int, dtype: str, topo: TopologyKind,
    symbolic: bool, seed: int,
) -> None:
    group = tuple(range(n))
    rng = np.random.default_rng(seed)
    inputs = {(r, c): rng.standard_normal(per_rank * (1 if kind == "all_gather" else n)).astype(
        DTYPES[dtype]) for r in group for c in range(2)}

    def make(rank: int, c: int) -> Tensor:
        x = inputs[(rank, c)]
        return SymbolicTensor(x.shape, dtype) if symbolic else x

    args = (kind, group, make, topo, chunks, 2, None, 16 if n > 8 else 8)
    _same(_run(True, *args), _run(False, *args))


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["all_reduce", "all_gather"]),
    n=st.integers(2, 9),
    size=st.integers(1, 200),
    chunks=st.integers(1, 4),
    dtype=st.sampled_from(sorted(DTYPES)),
    topo=st.sampled_from(list(TopologyKind)),
    symbolic=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_batched_oneshot_equals_frame_path(
    kind: str, n: int, size: int, chunks: int, dtype: str, topo: TopologyKind, symbolic: bool,
    seed: int,
) -> None:
    group = tuple(range(1, n + 1))  # not starting at 0
    rng = np.random.default_rng(seed)
    inputs = {(r, c): rng.standard_normal(size).astype(DTYPES[dtype]) for r in group for c in range(2)}

    def make(rank: int, c: int) -> Tensor:
        x = inputs[(rank, c)]
        return SymbolicTensor(x.shape, dtype) if symbolic else x

    args = (kind, group, make, topo, chunks, 2, None, 16 if n > 7 else 8, Algo.ONESHOT)
    _same(_run(True, *args), _run(False, *args))


@pytest.mark.parametrize("topo", [TopologyKind.FULL_MESH, TopologyKind.RING])
def test_injected_links_and_a_two_node_group_give_the_same_ns(topo: TopologyKind) -> None:
    group = (1, 3, 6, 9, 12, 14)  # two nodes: scale-out links on the ring

    def inject(v: NetworkView) -> None:
        if topo is TopologyKind.FULL_MESH:
            v.set_link(3, 6, LinkParams(10 * GB, 2_000), 50_000)
            v.link_down(6, 9, 0)
        else:  # a ring's links join neighbours only
            v.set_link(3, 4, LinkParams(10 * GB, 2_000), 50_000)

    def make(rank: int, c: int) -> Tensor:
        return np.arange(6 * 40, dtype=np.float32) * (rank + 1) + c

    for kind in KINDS:
        args = (kind, group, make, topo, 3, 3, inject, 16)
        _same(_run(True, *args), _run(False, *args))


def test_sixty_four_sockets_match_the_frame_path() -> None:
    group = tuple(range(64))

    def make(rank: int, c: int) -> Tensor:
        return SymbolicTensor((64 * 16,), "bfloat16")

    args = ("all_reduce", group, make, TopologyKind.FULL_MESH, 2, 1, None, 64)
    _same(_run(True, *args), _run(False, *args))
