"""Run directories: every experiment command writes into one directory of its own.

``runs/<command>-<UTC time>-<short hash>/`` by default (the hash is of the
resolved configuration, so equal configs are easy to spot), or ``--out DIR``.
A directory that already holds files is never written into without
``--overwrite``, so successive runs never destroy each other's results.

Each directory holds ``run.json`` (command, argv, time, status, files),
``config.json`` (the resolved configuration), the rows as JSON and CSV (and
Parquet when pyarrow is importable), the plots and the trace, and a short
``summary.md``. ``sn40l-emu runs`` lists them.

Output paths are checked as creatable and writable before a run starts, so a
bad ``--out`` or ``--json`` fails in a second with one line instead of after
the whole run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError

RUNS_ENV = "SN40L_EMU_RUNS_DIR"
MANIFEST = "run.json"


def runs_root() -> Path:
    """Where default run directories go: ``$SN40L_EMU_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe_dir(directory: Path, label: str, value: str) -> None:
    """``directory`` exists: it must be a directory we can create a file in (tried for real)."""
    if not directory.is_dir():
        raise ConfigError(label, value, f"a path whose parent is a directory ({directory} is not one)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sn40l-emu-probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(label, value, f"a writable location ({directory}: {exc.strerror or exc})") from None


def check_file_path(path: str | Path, label: str) -> Path:
    """A file we will write later: creatable (its missing parents too) and writable, checked now."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(label, str(path), "a file path (this is a directory)")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise ConfigError(label, str(path), "a writable file")
        _probe_dir(p.parent, label, str(path))
        return p
    _probe_dir(_first_existing(p.parent), label, str(path))
    return p


def check_out_dir(path: str | Path, overwrite: bool, label: str = "--out") -> Path:
    """A run directory: creatable and writable, and empty unless ``overwrite``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(label, str(path), "a directory (this is a file)")
    if p.is_dir():
        if any(p.iterdir()) and not overwrite:
            raise ConfigError(label, str(path), "an empty or new directory; pass --overwrite to write into it")
        _probe_dir(p, label, str(path))
        return p
    _probe_dir(_first_existing(p), label, str(path))
    return p


def config_hash(config: Mapping[str, Any]) -> str:
    """Seven hex digits of the resolved configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:7]


def _now_utc() -> datetime:
    return datetime.now(timezone.utc)  # wall-clock ok: names and dates the run directory, never a result


def rows_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Rows as a pandas DataFrame: nested dicts become ``a.b`` columns, lists become JSON text."""
    import pandas as pd

    df = pd.json_normalize([dict(r) for r in rows], sep=".")
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            df[col] = df[col].map(lambda v: json.dumps(v, default=str)
                                  if isinstance(v, (list, tuple, dict)) else v)
    return df


@dataclass
class RunDir:
    """One run's directory; create with :func:`prepare` (which checks before anything runs)."""

    path: Path
    command: str
    config: dict[str, Any]
    files: list[str] = field(default_factory=list)
    created: str = ""
    argv: list[str] | None = None
    done: bool = False

    def file(self, name: str) -> Path:
        """Path of a file in the directory (recorded in the manifest)."""
        if name not in self.files:
            self.files.append(name)
        return self.path / name

    def write_json(self, name: str, doc: Any) -> Path:
        p = self.file(name)
        p.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
        return p

    def write_rows(self, stem: str, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        """``stem.csv`` (and ``stem.parquet`` when pyarrow is importable); one line per row."""
        df = rows_frame(rows)
        out = [self.file(f"{stem}.csv")]
        df.to_csv(out[0], index=False)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return out
        out.append(self.file(f"{stem}.parquet"))
        df.to_parquet(out[1], index=False)
        return out

    def _manifest(self, status: str, extra: Mapping[str, Any] | None = None) -> None:
        doc = {"command": self.command, "created_utc": self.created, "status": status,
               "argv": self.argv,
               "config_hash": config_hash(self.config), "files": sorted(self.files), **(extra or {})}
        (self.path / MANIFEST).write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")

    def finish(self, summary: str, *, rows: int | None = None, headline: str = "") -> Path:
        """Write ``summary.md`` and mark the run done."""
        p = self.file("summary.md")
        lines = [f"# {self.command} run {self.path.name}", "", f"- created (UTC): {self.created}",
                 f"- config hash: {config_hash(self.config)} (resolved configuration in config.json)"]
        lines += ["", summary.rstrip(), "", "## Files", ""]
        lines += [f"- `{f}`" for f in sorted(self.files) if f != "summary.md"]
        p.write_text("\n".join(lines) + "\n")
        self._manifest("done", {"rows": rows, "headline": headline})
        self.done = True
        return p

    def fail(self, reason: str) -> None:
        """Mark the run failed (its files so far stay, for a post-mortem)."""
        self._manifest("failed", {"error": reason[:500]})


def _json_default(v: Any) -> Any:
    from enum import Enum

    if isinstance(v, Enum):
        return v.value
    if isinstance(v, (tuple, set, frozenset)):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return str(v)


def prepare(command: str, config: Mapping[str, Any], *, out: str | Path | None = None,
            overwrite: bool = False, json_path: str | Path | None = None,
            extra_paths: Sequence[tuple[str, str | Path | None]] = (),
            argv: Sequence[str] | None = None) -> RunDir:
    """Check every output path, then create the run directory and write ``config.json``.

    ``json_path``: the extra copy of the results that ``--json`` asks for.
    """
    cfg = json.loads(json.dumps(dict(config), default=_json_default))
    if out is not None and str(out) != "":
        path = check_out_dir(out, overwrite)
    else:
        root = runs_root()
        check_out_dir(root, True, label=RUNS_ENV if os.environ.get(RUNS_ENV) else "runs/")
        stamp = _now_utc().strftime("%Y%m%dT%H%M%SZ")
        base = root / f"{command}-{stamp}-{config_hash(cfg)}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    if json_path:
        check_file_path(json_path, "--json")
    for label, p in extra_paths:
        if p:
            check_file_path(p, label)
    path.mkdir(parents=True, exist_ok=True)
    rd = RunDir(path, command, cfg, created=_now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"),
                argv=list(argv) if argv is not None else None)
    rd.write_json("config.json", cfg)
    rd._manifest("running")
    _ACTIVE.append(rd)
    return rd


_ACTIVE: list[RunDir] = []  # run directories this process opened (the CLI marks unfinished ones failed)


def mark_unfinished_failed(reason: str) -> None:
    """Called by the CLI when a command ends with an error: its run directories say so."""
    while _ACTIVE:
        rd = _ACTIVE.pop()
        if not rd.done and rd.path.is_dir():
            try:
                rd.fail(reason)
            except OSError:
                pass


def write_copy(path: str | Path, doc: Any) -> Path:
    """The ``--json`` extra copy (its path was checked by :func:`prepare`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return p


def list_runs(root: Path | None = None) -> list[dict[str, Any]]:
    """Every run directory under ``root`` (default :func:`runs_root`), oldest first."""
    root = root or runs_root()
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        m = d / MANIFEST
        if not m.is_file():
            continue
        try:
            doc = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        out.append({"run": d.name, "command": doc.get("command", "?"), "created_utc": doc.get("created_utc", ""),
                    "status": doc.get("status", "?"), "rows": doc.get("rows"),
                    "headline": doc.get("headline") or "", "path": str(d)})
    out.sort(key=lambda r: (r["created_utc"], r["run"]))
    return out
