"""The injectable events, one typed class per kind: ``from sn40l_emu import events``.

``events.KillSocket(3, mode="process")``, ``events.LinkDown(src=3, dst=4)``,
``events.LinkDegrade(src=0, dst=1, bw_factor=0.1)``, ... -- each checks its
fields and says its own state changes. Schedule them on an
:class:`sn40l_emu.inject.InjectionPlan`. Defined in :mod:`sn40l_emu.inject.events`;
this module only names them at the top (``import sn40l_emu`` does not load it).
"""

from sn40l_emu.inject.events import (
    EVENT_TYPES,
    DdrThrottle,
    EventKind,
    HbmThrottle,
    HostLinkDegrade,
    InjectEvent,
    KillMode,
    KillSocket,
    LinkDegrade,
    LinkDown,
    LinkUp,
    RestartSocket,
    Straggler,
)

__all__ = ["EVENT_TYPES", "DdrThrottle", "EventKind", "HbmThrottle", "HostLinkDegrade", "InjectEvent", "KillMode",
           "KillSocket", "LinkDegrade", "LinkDown", "LinkUp", "RestartSocket", "Straggler"]
