"""The driver writes the package's bytecode for its socket actors, and never fails a run doing so."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sn40l_emu.cluster import bytecode


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("def f() -> int:\n    return 2\n")
    return pkg


def test_writes_the_bytecode_python_reads(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    assert bytecode.compile_package(pkg) is True
    pyc = Path(importlib.util.cache_from_source(str(pkg / "sub" / "mod.py")))
    assert pyc.is_file()
    # a fresh interpreter that may not write bytecode loads the module from that file (-v says so)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-v", "-c", "import pkg.sub.mod"], env=env, capture_output=True,
                         text=True, check=True)
    assert f"code object from '{pyc}'" in out.stderr


def test_once_per_process_and_stale_files_refreshed(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    assert bytecode.compile_package(pkg)
    pyc = Path(importlib.util.cache_from_source(str(pkg / "sub" / "mod.py")))
    old = pyc.read_bytes()
    src = pkg / "sub" / "mod.py"
    src.write_text("def f() -> int:\n    return 30\n")
    os.utime(src, (src.stat().st_atime + 10, src.stat().st_mtime + 10))  # compileall compares whole seconds
    assert bytecode.compile_package(pkg)  # the same process again: nothing walked
    assert pyc.read_bytes() == old
    bytecode._done.pop(pkg)  # as a new driver process
    assert bytecode.compile_package(pkg)
    assert pyc.read_bytes() != old  # the stale file (older source mtime in its header) rewritten


def test_read_only_tree_and_bad_source_do_not_raise(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    (pkg / "broken.py").write_text("def (:\n")
    assert bytecode.compile_package(pkg) is False  # the bad file is reported by its import, not here
    assert Path(importlib.util.cache_from_source(str(pkg / "sub" / "mod.py"))).is_file()

    # a cache folder that cannot be written (a plain file in its place: unwritable even for root)
    ro = _package(tmp_path / "ro")
    (ro / "__pycache__").write_text("")
    assert bytecode.compile_package(ro) is False


def test_missing_folder_does_not_raise(tmp_path: Path) -> None:
    bytecode.compile_package(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_prepare_env_writes_the_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    from sn40l_emu.cluster import bringup

    calls: list[int] = []
    monkeypatch.setattr(bringup, "compile_package", lambda: calls.append(1) or True)
    monkeypatch.setattr(bringup, "_ensure_token", lambda: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    bringup.prepare_env()
    assert calls == [1]
