"""sn40l-emu: a distributed emulator of a SambaNova SN40L node on Ray.

The scripting API (see :mod:`sn40l_emu.api`)::

    import sn40l_emu

    with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
        df = emu.run_coe(experts=[10, 50], batch=[8], tokens=[20])

Importing the package has no side effects: the names below load on first
use, and Ray is started only by :mod:`sn40l_emu.cluster` when a node is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sn40l_emu import events
    from sn40l_emu.api import Emulator, experiments, load_run, options, run_file
    from sn40l_emu.errors import ConfigError, EmuError

__all__ = ["ConfigError", "EmuError", "Emulator", "events", "experiments", "load_run", "options", "run_file"]

_API = {"Emulator", "experiments", "load_run", "options", "run_file"}
_ERRORS = {"ConfigError", "EmuError"}


def __getattr__(name: str) -> Any:
    """Lazy exports (PEP 562): importing ``sn40l_emu`` stays free of side effects and cheap."""
    if name in _API:
        from sn40l_emu import api

        return getattr(api, name)
    if name == "events":  # the typed injection events (sn40l_emu.events)
        import importlib

        return importlib.import_module("sn40l_emu.events")
    if name in _ERRORS:
        from sn40l_emu import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'sn40l_emu' has no attribute {name!r}")
