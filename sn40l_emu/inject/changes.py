"""From a scenario event to typed state changes on the node (pure)."""

from __future__ import annotations

from sn40l_emu.config import NodeProfile
from sn40l_emu.fabric.params import LinkParams
from sn40l_emu.inject.scenario import Event, EventKind
from sn40l_emu.socket_actor.dma import Engine
from sn40l_emu.socket_actor.socket_model import host_rate_per_socket
from sn40l_emu.socket_actor.state_changes import LinkState, SetDegradation, SetEngineRate, SetLink, StateChange

Targeted = list[tuple[list[int], StateChange]]


def _pairs(ev: Event) -> list[tuple[int, int]]:
    src, dst = ev.get("src"), ev.get("dst")
    return [(src, dst), (dst, src)] if ev.get("both_ways") else [(src, dst)]


def changes_for(ev: Event, profile: NodeProfile, n_sockets: int, now_ns: int) -> Targeted:
    """The state changes an event makes, effective from ``now_ns``; factors are relative to the profile.

    Link changes go to every socket: each sender keeps its own view of the
    fabric, and multi-hop traffic crosses links it does not own.
    """
    everyone = list(range(n_sockets))
    k = ev.kind
    out: Targeted = []
    if k is EventKind.LINK_DOWN or k is EventKind.LINK_UP:
        for a, b in _pairs(ev):
            out.append((everyone, LinkState(a, b, k is EventKind.LINK_UP, now_ns)))
    elif k is EventKind.LINK_DEGRADE:
        base = profile.p2p
        bw = max(1, int(base.link_bw_bytes_per_s * ev.get("bw_factor")))
        params = LinkParams(bw, base.link_latency_ns + ev.get("extra_latency"))
        for a, b in _pairs(ev):
            out.append((everyone, SetLink(a, b, params, now_ns)))
    elif k is EventKind.DDR_THROTTLE:
        f = ev.get("factor")
        socks = list(ev.get("socket"))
        if profile.dma.ddr_hbm_bw_bytes_per_s:
            out.append((socks, SetEngineRate(Engine.DDR_HBM, max(1, int(profile.dma.ddr_hbm_bw_bytes_per_s * f)),
                                             now_ns)))
        out.append((socks, SetDegradation(ddr_factor=f)))
    elif k is EventKind.HBM_THROTTLE:
        f = ev.get("factor")
        socks = list(ev.get("socket"))
        out.append((socks, SetEngineRate(Engine.HBM_SRAM, max(1, int(profile.dma.hbm_sram_bw_bytes_per_s * f)),
                                         now_ns)))
        out.append((socks, SetDegradation(hbm_factor=f)))
    elif k is EventKind.HOST_LINK_DEGRADE:
        f = ev.get("factor")
        socks = list(ev.get("socket"))
        out.append((socks, SetEngineRate(Engine.HOST_LINK, max(1, int(host_rate_per_socket(profile) * f)), now_ns)))
        out.append((socks, SetDegradation(host_factor=f)))
    elif k is EventKind.STRAGGLER:
        out.append((list(ev.get("socket")), SetDegradation(compute_factor=ev.get("compute_factor"))))
    return out
