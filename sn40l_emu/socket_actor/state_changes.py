"""Typed state changes applied to a socket from a virtual time onward (fault/bandwidth injection).

Each change is a frozen dataclass; :func:`apply_change` dispatches on its type.
Links are changed in every socket's network view (each sender keeps its own
view of the fabric), engines and degradations only on the socket named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sn40l_emu.errors import EmuError
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.socket_actor.dma import Engine
from sn40l_emu.socket_actor.socket_model import SocketModel
from sn40l_emu.socket_actor.tile import Degradation


@dataclass(frozen=True)
class SetDegradation:
    """Scale the socket's compute / HBM / DDR / host rates (straggler, throttling).

    Factors are relative to the healthy profile; ``None`` leaves a factor as it is.
    """

    compute_factor: float | None = None
    hbm_factor: float | None = None
    ddr_factor: float | None = None
    host_factor: float | None = None

    def applied_to(self, deg: Degradation) -> Degradation:
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(deg, **changes)


@dataclass(frozen=True)
class SetEngineRate:
    """A DMA engine serves at ``bw_bytes_per_s`` for copies starting at or after ``from_ns``."""

    engine: Engine
    bw_bytes_per_s: int
    from_ns: int


@dataclass(frozen=True)
class SetLink:
    src: int
    dst: int
    params: LinkParams
    from_ns: int


@dataclass(frozen=True)
class LinkState:
    src: int
    dst: int
    up: bool
    from_ns: int


StateChange = SetDegradation | SetEngineRate | SetLink | LinkState


def apply_change(model: SocketModel, network: Any, change: StateChange) -> None:
    if isinstance(change, SetDegradation):
        model.degradation = change.applied_to(model.degradation)
    elif isinstance(change, SetEngineRate):
        model.dma.get(change.engine).set_bw(change.bw_bytes_per_s, change.from_ns)
    elif isinstance(change, SetLink):
        network.set_link(change.src, change.dst, change.params, change.from_ns)
    elif isinstance(change, LinkState):
        if change.up:
            network.link_up(change.src, change.dst, change.from_ns)
        else:
            network.link_down(change.src, change.dst, change.from_ns)
    else:  # pragma: no cover - the union is closed
        raise EmuError(f"unknown state change {change!r}")
