"""Fault and bandwidth injection: scenario YAML or a Python plan -> timed events -> typed state changes.

``from sn40l_emu.inject import InjectionPlan`` (see :mod:`sn40l_emu.inject.plan`);
the typed events are :mod:`sn40l_emu.events`. Imported lazily: importing this
package alone loads nothing else.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "InjectionPlan":
        from sn40l_emu.inject.plan import InjectionPlan

        return InjectionPlan
    raise AttributeError(f"module 'sn40l_emu.inject' has no attribute {name!r}")
