"""Collectives pipelined with compute inside a fused kernel (SN40L paper §VII).

Prabhakar et al. (MICRO 2024, arXiv 2405.07518), §VII "Pipelined Compute and
Collective Communication": in a fused kernel the all-reduce after a
row-parallel matmul streams tile by tile while the matmul produces later
tiles. Modelled as a two-stage max-plus pipeline over ``K`` tiles
(``tile.collective_tiles``): the kernel body ``B`` produces tile k at
``k * B/K``; chunk k of the all-reduce (its idle-link time ``C`` split evenly,
``C/K`` per chunk) starts when tile k exists and chunk k-1 is done. With
``p = B/K`` and ``q = C/K`` the pipeline ends ``p + (K-1) max(p, q) + q`` after
the body starts, instead of ``B + C``; the difference, the collective time
hidden under the kernel, is

    hidden = (K - 1) * min(p, q) = (K - 1) * min(B, C) // K      (integer ns)

Only fused kernels (``KernelOp.fused``) followed directly by an all-reduce
pipeline; unfused kernels and GPU kernels run kernel-then-collective
(``hidden = 0``). ``C`` is the collective's closed-form time on idle links
(:func:`~sn40l_emu.collectives.selector.predict_ns` with the algorithm and
chunks the selector would pick, plus the profile's fixed collective cost), so
the hidden amount is a pure function of the kernel's cost, the collective and
the profile: cost reuse can recompute it (``engine/reuse.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sn40l_emu.config import NodeProfile
from sn40l_emu.fabric.topology import Topology, make_topology
from sn40l_emu.program import CollectiveKind, CollectiveOp, KernelOp, Op
from sn40l_emu.socket_actor.tile import KernelCost


def hidden_ns(body_ns: int, collective_ns: int, tiles: int) -> int:
    """Collective time hidden under a kernel body of ``tiles`` tiles (closed form above)."""
    if tiles <= 1 or body_ns <= 0 or collective_ns <= 0:
        return 0
    return (tiles - 1) * min(body_ns, collective_ns) // tiles


def pipelines(kernel: Op | None, coll: Op) -> bool:
    """Whether ``coll`` streams out of ``kernel`` tile by tile: a fused kernel, then an all-reduce."""
    return (isinstance(kernel, KernelOp) and kernel.fused and isinstance(coll, CollectiveOp)
            and coll.kind is CollectiveKind.ALL_REDUCE and len(coll.group) > 1)


@lru_cache(maxsize=4096)
def _topology(profile: NodeProfile, n_sockets: int) -> Topology:
    return make_topology(profile.p2p.topology, n_sockets, profile.sockets)


@lru_cache(maxsize=65536)
def collective_idle_ns(coll: CollectiveOp, profile: NodeProfile, n_sockets: int) -> int:
    """The collective's time on idle links: the selector's closed form plus the fixed cost."""
    from sn40l_emu.collectives.nccl import p2p_carrier
    from sn40l_emu.collectives.selector import best_chunks, predict_ns, select_algo
    from sn40l_emu.program import Algo

    coll = p2p_carrier(coll)  # NVLS has no P2P closed form: its carrier is the selector's choice
    topo = _topology(profile, max(n_sockets, max(coll.group) + 1))
    params = profile.p2p.params()
    if coll.algo is Algo.AUTO:
        algo, k = select_algo(coll.kind, coll.size_bytes, coll.group, topo, params, root=coll.root)
        k = coll.chunks or k
    else:
        algo = coll.algo
        k = coll.chunks or (params.default_chunks if algo is Algo.RING and params.default_chunks > 0
                            else best_chunks(coll.kind, algo, coll.size_bytes, coll.group, topo, params,
                                             root=coll.root)[0])
    ns = predict_ns(coll.kind, algo, coll.size_bytes, coll.group, topo, params, k, root=coll.root)
    return ns + profile.p2p.collective_fixed_ns


def collective_hidden_ns(kernel: Op | None, cost: KernelCost | None, coll: Op, profile: NodeProfile,
                         n_sockets: int) -> int:
    """Hidden collective time when ``coll`` follows ``kernel`` (cost ``cost``); 0 if it does not pipeline."""
    if cost is None or not pipelines(kernel, coll) or profile.tile.collective_tiles <= 1:
        return 0
    assert isinstance(coll, CollectiveOp)
    return hidden_ns(cost.body_ns, collective_idle_ns(coll, profile, n_sockets), profile.tile.collective_tiles)


def program_hidden_ns(ops: Sequence[Op], costs: Sequence[KernelCost], profile: NodeProfile,
                      n_sockets: int) -> list[int]:
    """Per kernel (program order, as ``costs``): collective time hidden under it."""
    out: list[int] = []
    k = -1
    for i, op in enumerate(ops):
        if isinstance(op, KernelOp):
            k += 1
            nxt = ops[i + 1] if i + 1 < len(ops) else None
            out.append(collective_hidden_ns(op, costs[k], nxt, profile, n_sockets) if nxt is not None else 0)
    return out
