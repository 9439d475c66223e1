"""From a scheduled event to typed state changes on the node (pure).

Each event kind says its own changes (:meth:`sn40l_emu.inject.events.InjectEvent.changes`);
this is the one call the runner and the tests make.
"""

from __future__ import annotations

from sn40l_emu.config import NodeProfile
from sn40l_emu.inject.events import ChangeContext, Targeted
from sn40l_emu.inject.scenario import Scheduled


def changes_for(ev: Scheduled, profile: NodeProfile, n_sockets: int, now_ns: int) -> Targeted:
    """The state changes ``ev`` makes, effective from ``now_ns``; factors are relative to the profile."""
    return ev.event.changes(ChangeContext(profile, n_sockets, now_ns))
