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
    from_ns: int | None = None  # kernels starting at or after it; None: from now on

    def applied_to(self, deg: Degradation) -> Degradation:
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "from_ns"}
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
    """Link ``src -> dst`` down or up from ``from_ns``.

    ``physical``: whether it carries data (a frame on it when it goes down is
    lost); ``routing``: whether routes and rings avoid it. A fault that strikes
    inside a step changes only the physical state; the driver moves the routing
    state at the next step boundary (see :mod:`sn40l_emu.fabric.network`).
    """

    src: int
    dst: int
    up: bool
    from_ns: int
    physical: bool = True
    routing: bool = True


@dataclass(frozen=True)
class FailAt:
    """The socket dies at virtual time ``at_ns``: the op running then stops there and the
    program fails with :class:`~sn40l_emu.errors.SocketKilledError`."""

    at_ns: int


@dataclass(frozen=True)
class FlushLinks:
    """A failed step is aborted at ``at_ns``: traffic this socket still had queued after it
    is dropped, so the retry does not wait behind frames of a collective that is over."""

    at_ns: int


StateChange = SetDegradation | SetEngineRate | SetLink | LinkState | FailAt | FlushLinks


def apply_change(model: SocketModel, network: Any, change: StateChange) -> None:
    if isinstance(change, SetDegradation):
        model.schedule_degradation(change)
    elif isinstance(change, SetEngineRate):
        model.dma.get(change.engine).set_bw(change.bw_bytes_per_s, change.from_ns)
    elif isinstance(change, SetLink):
        network.set_link(change.src, change.dst, change.params, change.from_ns)
    elif isinstance(change, LinkState):
        move = network.link_up if change.up else network.link_down
        move(change.src, change.dst, change.from_ns, physical=change.physical, routing=change.routing)
    elif isinstance(change, FlushLinks):
        if network is not None:
            network.flush_after(change.at_ns)
    elif isinstance(change, FailAt):
        model.fail_at_ns = change.at_ns
        if network is not None:  # what it had not sent by then never leaves it
            network.sender_dies(change.at_ns)
    else:  # pragma: no cover - the union is closed
        raise EmuError(f"unknown state change {change!r}")
