"""Parameters of the P2P fabric, in base units (bytes/s, ns).

Built from the node profile by :mod:`sn40l_emu.config`; all are knobs
(docs/model.md §3: link rate, latency and wiring of the SN40L are not public).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TopologyKind(str, Enum):
    FULL_MESH = "full_mesh"
    RING = "ring"
    TORUS_2D = "torus_2d"
    SWITCH = "switch"


@dataclass(frozen=True)
class LinkParams:
    """One directed link: a FIFO server with a fixed latency and a bandwidth."""

    bw_bytes_per_s: int
    latency_ns: int


@dataclass(frozen=True)
class P2PParams:
    topology: TopologyKind
    link: LinkParams
    chunk_overhead_ns: int  # fixed sender cost per chunk (descriptor + header), occupies the link
    max_frame_bytes: int  # a frame (header + payload) larger than this is rejected
    default_chunks: int  # chunks per ring segment when the caller does not choose
    timeout_s: float  # wall-clock wait for a peer's frame before it is declared dead
    scale_out: LinkParams  # between two nodes (TP16), per socket pair and direction
