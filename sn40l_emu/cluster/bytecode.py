"""Compiled bytecode for this package, written once by the driver before socket actors start.

Every socket actor is a fresh Python process that imports ``sn40l_emu``. Python
only reads ``__pycache__/*.pyc``; it writes them on import only where
``PYTHONDONTWRITEBYTECODE`` is unset and the tree is writable. An editable install
(``pip install -e .``) compiles nothing at install time, so with that variable set
(as in some containers and CI images) every actor recompiled our modules from
source: the 52 modules an actor holds cost 0.28-0.32 CPU-s to import instead of
0.18-0.22 (``bench/bringup_wall.py --no-bytecode``; README "Emulator speed").

:func:`compile_package` writes the missing or stale ``.pyc`` files of the package
(``compileall``, which compares each source's mtime with its ``.pyc`` header, so an
up-to-date tree costs a directory walk: 6 ms for the package). A ``.pyc`` it leaves
stale (a source edited within the second it was compiled) is never used: the import
also compares the source's size, and compiles in memory. It is best effort:
a read-only install, a full disk or a file that does not compile are skipped
silently (the import then compiles in memory, as before, and reports a real syntax
error itself).
"""

from __future__ import annotations

import compileall
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent

_done: dict[Path, bool] = {}


def compile_package(package_dir: Path = PACKAGE_DIR) -> bool:
    """Write missing or stale ``.pyc`` files under ``package_dir``, once per process.

    Returns whether every file compiled (False also when nothing could be written);
    never raises: a run must not fail because its bytecode could not be cached.
    """
    if package_dir not in _done:
        try:
            _done[package_dir] = bool(compileall.compile_dir(str(package_dir), quiet=2))
        except Exception:  # a cache, never a reason to fail: the imports compile in memory instead
            _done[package_dir] = False
    return _done[package_dir]
