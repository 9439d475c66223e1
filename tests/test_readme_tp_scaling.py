"""Every ``sn40l-emu tp-scaling`` command in README.md runs as written, and its rows add up.

The commands are parsed from the README (a trailing ``\\`` joins lines), run
in-process with ``--backend local`` appended when the command names no
backend, and their ``--json``/``--out`` paths redirected into a temporary
directory. Nothing else is changed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from sn40l_emu.cli import main

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands(text: str, command: str) -> list[list[str]]:
    """Argument lists of every ``sn40l-emu <command>`` line (continuations joined), program name dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip().strip("`")
        if line.startswith(f"sn40l-emu {command} ") or line == f"sn40l-emu {command}":
            args = shlex.split(line)[1:]
            if args not in out:  # the same command shown twice runs once
                out.append(args)
    return out


def redirect(args: list[str], tmp: Path) -> list[str]:
    """``args`` with outputs in ``tmp``, ``--backend local`` when no backend is named, no progress bar."""
    out = list(args)
    for flag, name in (("--json", "tp.json"), ("--out", "out")):
        if flag in out:
            out[out.index(flag) + 1] = str(tmp / name)
        else:
            out += [flag, str(tmp / name)]
    if "--backend" not in out:
        out += ["--backend", "local"]
    return [*out, "--no-progress"]


COMMANDS = readme_commands(README.read_text(), "tp-scaling")


@pytest.fixture(autouse=True)
def _keep_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_readme_has_tp_scaling_commands() -> None:
    assert len(COMMANDS) >= 2
    assert all(c[0] == "tp-scaling" for c in COMMANDS)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c[1:5]) for c in COMMANDS])
def test_readme_command_runs_and_every_row_adds_up(args: list[str], tmp_path: Path) -> None:
    assert main(redirect(args, tmp_path)) == 0
    rows = json.loads((tmp_path / "tp.json").read_text())["rows"]
    assert rows
    for r in rows:
        assert sum(r["breakdown_ns"].values()) == r["latency_ns"] > 0, (r["tp"], r["phase"], r["mode"])
