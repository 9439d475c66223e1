"""Reading user files (YAML profiles and scenarios, JSON model configs) with bounds.

Every input file a user can name passes through here, so hostile or mistaken
files all fail the same way: a ``ConfigError`` naming the file and what is
allowed, never a traceback, a hang or a multi-gigabyte allocation. The limits:

- at most ``MAX_FILE_BYTES`` (256 KiB) per file and ``MAX_SCALAR_CHARS`` per
  ``--set`` value: real profiles and scenarios are a few KiB;
- UTF-8 text only (a binary file is refused before parsing);
- YAML aliases (``*name``) are refused: with them a 500-byte file can expand
  into gigabytes once walked (the "billion laughs"), and no input needs them;
- nesting at most ``MAX_DEPTH`` (32) levels: PyYAML's composer and ``json``
  recurse, so a 5,000-deep ``[[[...`` would otherwise raise ``RecursionError``.

Values are checked by their consumers (``schema``, the scenario and model
loaders), which also bound magnitudes (``units.MAX_*``).

Error messages quote a location (line and column), never the file's contents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

from sn40l_emu.errors import ConfigError

MAX_FILE_BYTES = 256 * 1024
MAX_SCALAR_CHARS = 256
MAX_DEPTH = 32


# libyaml (C) when present: 5-10x faster; the checks below do not depend on it.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """Internal: a bound was hit; turned into ConfigError by the caller."""


def _check_events(text: str) -> None:
    """Walk the parser's event stream (iterative, no tree) and refuse aliases and deep nesting.

    Only once this passes is the document composed, whose code recurses per level.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, AliasEvent):
            raise _Refused(f"{_line(event)}YAML aliases (*name) are not accepted")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"{_line(event)}nesting deeper than {MAX_DEPTH} levels")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}: " if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The location and the problem of a YAML error, without the quoted source lines."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_yaml_text(text: str, what: str) -> Any:
    """Parse YAML ``text`` within the bounds above; ``what`` names the input in errors."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(what, f"<{len(text)} characters>", f"at most {MAX_FILE_BYTES} bytes of YAML")
    try:
        _check_events(text)
        loader = _LOADER(text)  # a safe loader: CSafeLoader or SafeLoader (what yaml.safe_load uses)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError(what, text, f"YAML without aliases or deep nesting ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(what, text, f"valid YAML ({_yaml_problem(exc)})") from None
    except Exception as exc:
        # PyYAML's constructors raise assorted built-in errors on odd scalars: ValueError on a
        # bad date or a 5,000-digit int, IndexError on an empty ``!!float``, TypeError, ...
        raise ConfigError(what, text, f"valid YAML ({type(exc).__name__}: {exc})") from None


def _read_text(path: Path, what: str) -> str:
    return read_text_bounded(path, what, MAX_FILE_BYTES, "file", "text file")


def read_text_bounded(path: Path, what: str, max_bytes: int, noun: str, utf8_noun: str) -> str:
    """A file's text: at most ``max_bytes``, UTF-8, or a ConfigError naming ``what`` (``noun`` in
    the message: "file", "trace file"). Read in 1 MiB pieces: ``read(n)`` would reserve all ``n``
    bytes at once, and the size ``stat`` gives is 0 for pipes and /proc files."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(what, str(path), f"a {noun} of at most {max_bytes} bytes (this one has {size})")
        parts: list[bytes] = []
        total = 0
        with path.open("rb") as fh:
            while total <= max_bytes:
                part = fh.read(min(1 << 20, max_bytes + 1 - total))
                if not part:
                    break
                parts.append(part)
                total += len(part)
    except OSError as exc:
        raise ConfigError(what, str(path), f"a readable {noun} ({exc.strerror or type(exc).__name__})") from None
    if total > max_bytes:
        raise ConfigError(what, str(path), f"a {noun} of at most {max_bytes} bytes")
    try:
        return b"".join(parts).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(what, str(path), f"a UTF-8 {utf8_noun} (byte {exc.start} is not UTF-8)") from None


def load_yaml_file(path: str | Path, what: str) -> Any:
    """Read and parse one YAML file within the bounds; errors name ``what`` and the path."""
    p = Path(path)
    text = _read_text(p, what)
    try:
        return load_yaml_text(text, what)
    except ConfigError as exc:
        raise ConfigError(what, str(p), exc.allowed) from None


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level must be a mapping (profiles, scenarios)."""
    data = load_yaml_file(path, what)
    if not isinstance(data, dict):
        raise ConfigError(what, str(path), f"a YAML mapping at top level (this file holds {_kind(data)})")
    return data


def parse_scalar(text: str, what: str) -> Any:
    """One ``--set`` value read as YAML (``25``, ``'50 GB/s'``, ``true``); odd YAML stays a string."""
    if len(text) > MAX_SCALAR_CHARS:
        raise ConfigError(what, text, f"a value of at most {MAX_SCALAR_CHARS} characters")
    try:
        return load_yaml_text(text, what)
    except ConfigError as exc:
        if "aliases" in exc.allowed:
            raise
        return text


def load_json_file(path: str | Path, what: str) -> Any:
    """Read and parse one JSON file (a model ``config.json``) within the same bounds."""
    p = Path(path)
    text = _read_text(p, what)
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(what, str(p), f"JSON nested at most {MAX_DEPTH} levels (this file: {depth})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(what, str(p), f"valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(what, str(p), f"valid JSON ({type(exc).__name__}: {exc})") from None


def json_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (an upper bound is all that matters).

    Iterative and linear: checked before ``json.loads``, whose decoder recurses per level.
    """
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _kind(data: object) -> str:
    if data is None:
        return "nothing"
    if isinstance(data, str):
        return "plain text"
    if isinstance(data, list):
        return "a list"
    return f"a {type(data).__name__}"
