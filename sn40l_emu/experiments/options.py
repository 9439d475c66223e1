"""Experiment options, declared once per config field and turned into CLI options.

Every experiment config is a frozen dataclass whose fields carry an
:class:`Opt` (help text, bounds or choices, unit, CLI spelling). From that one
declaration come the argparse options (:func:`add_options`: every option has
help text and shows its default), the conversion of command-line text and of
Python API keywords (:func:`convert`), and the validation that a config runs
in ``__post_init__`` (:func:`check_fields`). A bad value raises
:class:`~sn40l_emu.errors.ConfigError` naming the option, the value and what
is allowed, so the CLI exits 2 with one line.

Naming across commands (one name per concept): ``--profile`` is the node
profile (a shipped name or a YAML path; commands that compare platforms take
a comma-separated list), ``--set K=V`` overrides a profile field, ``--backend``
is ``ray`` or ``local``. The old spellings ``--platform`` / ``--platforms``
stay as hidden aliases.

The bounds on sizes (tokens, batch, experts) are sanity limits that catch
typos such as ``--tokens 1e12`` before a run starts; they are not limits of
the modelled hardware.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sn40l_emu.errors import ConfigError

# Sanity limits (see the module docstring): far above any shipped model or paper experiment.
MAX_TOKENS = 1 << 20  # 1,048,576 tokens of prompt, context or output
MAX_BATCH = 1 << 16
MAX_EXPERTS = 100_000
MAX_SEED = 2**32 - 1

# The values of sn40l_emu.cluster.session.Backend, spelled here so that `--help` does not import the
# node machinery (about a second); tests/test_cli_options.py holds the two equal.
BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class Opt:
    """How one config field appears on the command line and what it accepts.

    ``flag``: the option name without dashes (default: the field name with
    ``-`` for ``_``). ``lo``/``hi``: inclusive bounds of a number (of each
    element for a list). ``choices``: allowed words (of each element).
    ``aliases``: old spellings, accepted but hidden from ``--help``.
    ``short``: extra visible spellings such as ``-b``. ``parse``: turns one
    word into a value (e.g. a size with a unit) instead of the field's type.
    ``positional``: a positional argument. ``cli``: False keeps it API-only.
    """

    help: str
    flag: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    aliases: tuple[str, ...] = ()
    short: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    positional: bool = False
    cli: bool = True
    metavar: str = ""
    cli_default: Any = None  # the CLI's default where it differs from the Python API's (None: the same)
    shown: str = ""  # the default as --help shows it (default: the value)


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its option declaration (see :class:`Opt`)."""
    return field(default=default, metadata={"opt": Opt(help=help, **kw)})


def profile_field(default: Any = "sn40l", *, many: bool = False) -> Any:
    """The node profile field: one name (or several, comma-separated, where the command compares)."""
    what = ("shipped profiles or YAML paths to compare, comma-separated (see `sn40l-emu profile list`)"
            if many else "shipped profile name or path to a YAML profile (see `sn40l-emu profile list`)")
    return option(default, what, flag="profile", aliases=("platforms", "platform"), metavar="NAME")


def overrides_field() -> Any:
    return option((), "override one profile field, e.g. --set p2p.link_bw_gbps=25 (repeatable)",
                  flag="set", metavar="K=V")


def backend_field(default: str = "ray", cli_default: str | None = None) -> Any:
    return option(default, "ray: one Ray actor per socket (the distributed emulator); local: in-process",
                  choices=BACKENDS, cli_default=cli_default)


# ---- declarations -> argparse --------------------------------------------------------------------
def _flag(f: dataclasses.Field[Any]) -> str:
    o: Opt = f.metadata["opt"]
    return o.flag or f.name.replace("_", "-")


def dest(f: dataclasses.Field[Any]) -> str:
    """The argparse destination (and Python API keyword) of a field: its flag with ``_`` for ``-``."""
    return _flag(f).replace("-", "_")


def opt_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "opt" in f.metadata]


def _types(cls: type) -> dict[str, Any]:
    """Field types, each inherited field resolved in the module of the class that declares it."""
    return typing.get_type_hints(cls)


def _kind(tp: Any) -> tuple[bool, Any]:
    """(is a list, element type) of a field type such as ``tuple[int, ...]`` or ``int | None``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        return True, typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and origin is not None:
        return False, args[0]
    return False, tp


def _show_default(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(_show_default(v) for v in value) if value else "none"
    if value is None or value == "":
        return "none"
    return str(value)


def _allowed(o: Opt, elem: Any, many: bool) -> str:
    if o.choices or (isinstance(elem, type) and issubclass(elem, Enum)):
        words = o.choices or tuple(m.value for m in elem)
        what = "one of " + ", ".join(words)
    elif elem is int or elem is float:
        noun = "an integer" if elem is int else "a number"
        if o.lo is not None and o.hi is not None:
            what = f"{noun} {_num(o.lo)}..{_num(o.hi)}"
        elif o.lo is not None:
            what = f"{noun} >= {_num(o.lo)}"
        else:
            what = noun
        if o.unit:
            what += f" ({o.unit})"
    else:
        what = "text"
    return ("comma-separated, each " + what) if many else what


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def add_options(p: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per declared field of ``cls`` (defaults stay None: :func:`from_args` fills them)."""
    types = _types(cls)
    for f in opt_fields(cls):
        o: Opt = f.metadata["opt"]
        if not o.cli:
            continue
        many, elem = _kind(types[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if o.cli_default is not None:
            default = o.cli_default
        text = o.help
        if o.choices or (isinstance(elem, type) and issubclass(elem, Enum)) or o.lo is not None:
            head, sep, tail = text.partition(" (default:")
            text = f"{head}; {_allowed(o, elem, many)}{sep}{tail}"
        if o.positional:
            p.add_argument(dest(f), metavar=o.metavar or f.name.upper(), help=text)
            continue
        if default is not None and not (elem is bool and not many) and "(default:" not in text:
            text += f" (default: {o.shown or _show_default(default)})"
        names = [*o.short, "--" + _flag(f)]
        if elem is bool and not many:
            p.add_argument(*names, dest=dest(f), action=argparse.BooleanOptionalAction, default=None,
                           help=text + f" (default: {'on' if default else 'off'})")
        elif f.name == "overrides":
            p.add_argument(*names, dest=dest(f), action="append", default=None, metavar=o.metavar or "K=V",
                           help=text)
        else:
            p.add_argument(*names, dest=dest(f), default=None, help=text,
                           metavar=o.metavar or ("LIST" if many else _flag(f).upper().replace("-", "_")))
        for a in o.aliases:
            if a == _flag(f):
                continue
            p.add_argument("--" + a, dest=f"_alias_{a.replace('-', '_')}", default=None, help=argparse.SUPPRESS,
                           action="append" if f.name == "overrides" else "store")


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _one(label: str, word: Any, o: Opt, elem: Any, many: bool) -> Any:
    """Convert and check one value (a word from the command line or a Python value)."""
    bad = ConfigError(label, word, _allowed(o, elem, many))
    if o.parse is not None and isinstance(word, str):
        try:
            val = o.parse(word)
        except (ValueError, OverflowError):
            raise bad from None
    elif isinstance(elem, type) and issubclass(elem, Enum):
        if isinstance(word, elem):
            return word
        w = str(word.value if isinstance(word, Enum) else word).strip().lower()
        for cand in (w, w.replace("_", "-"), w.replace("-", "_")):
            if cand in {m.value for m in elem}:
                return elem(cand)
        raise bad
    elif elem is bool:
        if isinstance(word, bool):
            val = word
        elif str(word).lower() in ("1", "true", "yes", "on"):
            val = True
        elif str(word).lower() in ("0", "false", "no", "off"):
            val = False
        else:
            raise bad
    elif elem is int:
        if isinstance(word, bool):
            raise bad
        if isinstance(word, int):
            val = word
        elif isinstance(word, float) and word.is_integer():
            val = int(word)
        else:
            try:
                val = int(str(word).strip().replace("_", ""))
            except ValueError:
                raise bad from None
    elif elem is float:
        if isinstance(word, bool):
            raise bad
        try:
            val = float(word)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if val != val or val in (float("inf"), float("-inf")):
            raise bad
    else:
        val = str(word)
        if o.choices:
            norm = val.strip().lower().replace("_", "-")
            match = [c for c in o.choices if c.replace("_", "-") == norm]
            if not match:
                raise bad
            val = match[0]
    number = isinstance(val, (int, float)) and not isinstance(val, bool)
    if number and ((o.lo is not None and val < o.lo) or (o.hi is not None and val > o.hi)):
        raise bad
    return val


def convert(cls: type, name: str, value: Any, label: str | None = None) -> Any:
    """A field's value from command-line text or a Python value, checked; ConfigError names ``label``."""
    f = next(x for x in dataclasses.fields(cls) if x.name == name)
    o: Opt = f.metadata["opt"]
    many, elem = _kind(_types(cls)[name])
    label = label or name
    if f.name == "overrides":
        vals = [value] if isinstance(value, str) else list(value or ())
        return tuple(str(v) for v in vals)
    if many:
        if isinstance(value, str):
            items: list[Any] = _words(value)
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        if not items:
            raise ConfigError(label, value, _allowed(o, elem, many))
        return tuple(_one(label, w, o, elem, many) for w in items)
    if value is None and f.default is None:
        return None
    return _one(label, value, o, elem, many)


def check_fields(obj: Any) -> None:
    """Re-check every declared field of a config (what the CLI checked, for API callers too)."""
    cls = type(obj)
    for f in opt_fields(cls):
        v = getattr(obj, f.name)
        if v is None:
            continue
        got = convert(cls, f.name, v)
        if got != v and not (isinstance(v, Enum) or isinstance(got, Enum)):
            raise ConfigError(f.name, v, "a value of the declared type (use the config's own types)")


def from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``cls`` from parsed options: defaults for what was not given, hidden aliases merged.

    An alias given together with a different value of its option is an error.
    """
    kw: dict[str, Any] = {}
    for f in opt_fields(cls):
        o: Opt = f.metadata["opt"]
        if not o.cli or f.name in fixed:
            continue
        raw = getattr(args, dest(f), None)
        label = f.name if o.positional else "--" + _flag(f)
        for a in o.aliases:
            if a == _flag(f):
                continue
            alt = getattr(args, f"_alias_{a.replace('-', '_')}", None)
            if alt is None:
                continue
            if f.name == "overrides":
                raw = [*(raw or []), *alt]
            elif raw is not None and raw != alt:
                raise ConfigError(label, raw, f"left out when --{a} {alt} is given (--{a} is its old name)")
            else:
                raw = alt
        if raw is None:
            if o.cli_default is None:
                continue
            raw = o.cli_default
        kw[f.name] = convert(cls, f.name, raw, label)
    return cls(**{**kw, **fixed})


def from_kwargs(cls: type, kwargs: Mapping[str, Any], **fixed: Any) -> Any:
    """Build ``cls`` from Python keywords: field names or option names (``batch`` for ``--batch``)."""
    by_key: dict[str, dataclasses.Field[Any]] = {}
    for f in opt_fields(cls):
        by_key[f.name] = f
        by_key[dest(f)] = f
    kw: dict[str, Any] = {}
    for k, v in kwargs.items():
        found = by_key.get(k)
        if found is None:
            allowed = sorted({dest(x) for x in opt_fields(cls)})
            raise ConfigError(k, v, "one of the keywords " + ", ".join(allowed))
        kw[found.name] = convert(cls, found.name, v, k)
    for k, v in fixed.items():
        kw.setdefault(k, v)
    return cls(**kw)


def option_table(cls: type) -> list[dict[str, Any]]:
    """Name, default and help of every option (for docs and tests)."""
    out = []
    for f in opt_fields(cls):
        o: Opt = f.metadata["opt"]
        out.append({"field": f.name, "option": "--" + _flag(f), "default": _show_default(f.default),
                    "help": o.help, "aliases": list(o.aliases)})
    return out


def to_jsonable(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON values (enums by value, tuples as lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


# ---- options every experiment command shares -------------------------------------------------------
def output_args(p: argparse.ArgumentParser, json_help: str = "also write the results JSON here") -> None:
    """``--out``, ``--overwrite``, ``--json`` and ``--no-progress``: where a run's results go."""
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory to write (default: runs/<command>-<UTC time>-<hash>/; "
                        "SN40L_EMU_RUNS_DIR moves runs/)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow --out to name a directory that already holds files (default: refuse)")
    p.add_argument("--json", default=None, metavar="PATH", help=json_help + " (default: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown on a terminal)")


def profile_args(p: argparse.ArgumentParser, default: str = "sn40l") -> None:
    """``--profile`` and ``--set`` for commands without a config declaration (``up``)."""
    p.add_argument("--profile", default=default,
                   help=f"shipped profile name or path to a YAML profile (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override one profile field, e.g. --set p2p.link_bw_gbps=25 (repeatable; default: none)")


def split_names(value: Sequence[str] | str) -> tuple[str, ...]:
    return tuple(_words(value)) if isinstance(value, str) else tuple(value)
