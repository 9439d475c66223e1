"""What the bench scripts share: where results go, which commit was measured, CPU seconds of processes.

The scripts run as ``python bench/<name>.py``, so this folder is on ``sys.path`` and they
import it as ``benchlib``. CPU comes from ``/proc`` (and psutil for the process tree)
because a same-run comparison on a shared host is fairer in CPU seconds than in wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def git_rev() -> str:
    """The short commit of the tree being measured ("" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=False)
        return out.stdout.strip()
    except OSError:
        return ""


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` (same host; utime, stime of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> dict[int, tuple[str, float]]:
    """Every process this one started (Ray's, for a Ray we started): pid -> (short name, CPU seconds so far).

    The name is the Python script a process runs (``default_worker.py``), its title
    (``ray::SocketActorImpl``) or its program (``raylet``).
    """
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
            t = p.cpu_times()
        except psutil.Error:
            continue
        scripts = [a for a in cmd[1:] if a.endswith(".py")] if cmd and cmd[0].endswith("python") else []
        name = Path(scripts[0] if scripts else cmd[0]).name.split()[0] if cmd else "?"
        out[p.pid] = (name, t.user + t.system)
    return out


def write_json(path: str | Path, doc: object) -> Path:
    """Write a bench's JSON document (folders made as needed) and say where: every script ends so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")
    return out
