"""The arguments of one collective call on one rank, checked once."""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.p2p.topology import DirectedLink
from sn40l_emu.p2p.transport import Transport
from sn40l_emu.socket_actor.program import ReduceOp


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
    tag: int
    root: int = 0

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
        return self.t.topology.ring_order(self.group, self.down_links())
