"""The arguments of one collective call on one rank, checked once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sn40l_emu.fabric.topology import DirectedLink
from sn40l_emu.p2p.transport import Transport
from sn40l_emu.program import Algo, CollectiveKind, ReduceOp

_TAG_MASK = (1 << 63) - 1


def wire_tag(
    tag: int, kind: CollectiveKind, algo: Algo, chunks: int, ring: tuple[int, ...] = ()
) -> int:
    """The tag frames of this collective carry: the caller's tag mixed with what every
    member must agree on (collective, algorithm, chunks, ring order).

    Members that disagree -- e.g. they saw different down links at their start
    times and formed different rings -- then never match each other's frames and
    the collective fails with a P2P timeout instead of mixing data. For fixed
    (kind, algo, chunks, ring) the map is a bijection on tags < 2**63, so distinct
    caller tags stay distinct.
    """
    if not 0 <= tag <= _TAG_MASK:
        raise ValueError(f"tag must be in [0, 2**63), got {tag}")
    key = repr((kind.value, algo.value, chunks, ring)).encode()
    mix = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _TAG_MASK
    return tag ^ mix


@dataclass(frozen=True)
class CollCall:
    """One rank's view of a collective: group (global socket indices), start time, knobs.

    ``chunks`` is already resolved (>= 1): per ring segment for ring
    algorithms, per frame for the others.
    """

    t: Transport
    group: tuple[int, ...]
    start_ns: int
    op: ReduceOp
    chunks: int
    tag: int  # the wire tag (see wire_tag)
    root: int = 0
    ring_order: tuple[int, ...] = ()  # the ring, when the caller already formed it

    def __post_init__(self) -> None:
        if len(set(self.group)) != len(self.group) or not self.group:
            raise ValueError(f"group must be non-empty without repeats, got {self.group}")
        if self.t.rank not in self.group:
            raise ValueError(f"socket {self.t.rank} is not in group {self.group}")
        if self.root not in self.group:
            raise ValueError(f"root {self.root} is not in group {self.group}")
        if self.chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {self.chunks}")
        if self.start_ns < 0:
            raise ValueError(f"start_ns must be >= 0, got {self.start_ns}")

    @property
    def n(self) -> int:
        return len(self.group)

    @property
    def index(self) -> int:
        """This rank's position in the group (its segment / shard number)."""
        return self.group.index(self.t.rank)

    def down_links(self) -> frozenset[DirectedLink]:
        """Links down when the collective starts (all ranks must agree on them)."""
        return self.t.network.down_links(self.start_ns)

    def ring(self) -> tuple[int, ...]:
        """The ring the topology forms for this group, avoiding down links."""
        return self.ring_order or self.t.topology.ring_order(self.group, self.down_links())
