"""A tiny declarative schema: YAML leaves in human units -> frozen dataclasses in base units.

Each dataclass field carries metadata naming its YAML key, its unit and its
allowed range. One generic loader walks the fields, so every section gets the
same clear errors (field path, value, what is allowed) without per-field code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from sn40l_emu import units
from sn40l_emu.errors import ConfigError


class Unit(str, Enum):
    """The unit a YAML value is written in; the loader converts to the base unit."""

    COUNT = "count"
    FRACTION = "fraction"  # a ratio, e.g. an efficiency
    FACTOR = "factor"  # a positive multiplier
    SECONDS_F = "s (float)"  # wall-clock durations (timeouts) stay float seconds
    B = "B"
    KIB = "KiB"
    MIB = "MiB"
    GIB = "GiB"
    TIB = "TiB"
    TB = "TB"
    GBPS = "GB/s"
    TBPS = "TB/s"
    TFLOPS = "TFLOP/s"
    NS = "ns"
    US = "us"
    TEXT = "text"
    CHOICE = "choice"


_SCALE: dict[Unit, int] = {
    Unit.B: 1, Unit.KIB: units.KiB, Unit.MIB: units.MiB, Unit.GIB: units.GiB, Unit.TIB: units.TiB,
    Unit.TB: units.TB, Unit.GBPS: units.GB, Unit.TBPS: units.TB, Unit.TFLOPS: units.TFLOPS,
    Unit.NS: 1, Unit.US: units.NS_PER_US,
}
_SIZE_UNITS = {Unit.B, Unit.KIB, Unit.MIB, Unit.GIB, Unit.TIB, Unit.TB}
_BW_UNITS = {Unit.GBPS, Unit.TBPS}
_TIME_UNITS = {Unit.NS, Unit.US}


@dataclass(frozen=True)
class FieldSpec:
    yaml_key: str
    unit: Unit
    allow_zero: bool = False
    max_value: float | None = None
    choices: type[Enum] | None = None


def q(yaml_key: str, unit: Unit, *, allow_zero: bool = False, max_value: float | None = None,
      choices: type[Enum] | None = None) -> Any:
    """Declare a dataclass field read from ``yaml_key`` written in ``unit``."""
    spec = FieldSpec(yaml_key, unit, allow_zero, max_value, choices)
    return dataclasses.field(metadata={"spec": spec})


_MAX_BASE: dict[Unit, int] = {
    **{u: units.MAX_SIZE_BYTES for u in (Unit.B, Unit.KIB, Unit.MIB, Unit.GIB, Unit.TIB, Unit.TB)},
    Unit.GBPS: units.MAX_BW_BYTES_PER_S, Unit.TBPS: units.MAX_BW_BYTES_PER_S,
    Unit.TFLOPS: units.MAX_FLOPS_PER_S, Unit.NS: units.MAX_TIME_NS, Unit.US: units.MAX_TIME_NS,
}
MAX_COUNT = 2**31  # counts (units, links, sockets) far beyond any machine; refuses typos like 1e30
MAX_FACTOR = 1e6  # a multiplier beyond a million is a typo, not a model
MAX_SECONDS_F = units.MAX_TIME_NS / units.NS_PER_S


def allowed_text(spec: FieldSpec) -> str:
    if spec.unit is Unit.CHOICE and spec.choices is not None:
        return "one of " + ", ".join(repr(c.value) for c in spec.choices)
    if spec.unit is Unit.TEXT:
        return "a string"
    if spec.unit is Unit.COUNT:
        low = ">= 0" if spec.allow_zero else ">= 1"
        top = spec.max_value if spec.max_value is not None else MAX_COUNT
        return f"an integer {low} and <= {top:g}"
    low = ">= 0" if spec.allow_zero else "> 0"
    high = f" and <= {_max_in_unit(spec):g}"
    example = ""
    if spec.unit in _SIZE_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '64 GiB')"
    elif spec.unit in _BW_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '50 GB/s')"
    elif spec.unit in _TIME_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '1 us')"
    elif spec.unit is Unit.TFLOPS:
        example = " (a number in TFLOP/s, or a string like '638 TFLOP/s')"
    return f"a number {low}{high}{example}"


def _max_in_unit(spec: FieldSpec) -> float:
    """The largest value accepted, in the unit the field is written in."""
    if spec.unit is Unit.FRACTION:
        return 1.0
    if spec.unit is Unit.FACTOR:
        cap = MAX_FACTOR
    elif spec.unit is Unit.SECONDS_F:
        cap = MAX_SECONDS_F
    else:
        cap = _MAX_BASE[spec.unit] / _SCALE[spec.unit]
    return min(cap, spec.max_value) if spec.max_value is not None else cap


def convert(path: str, raw: object, spec: FieldSpec) -> Any:
    """Validate one YAML value and convert it to the field's base unit.

    A bare number (or a unitless string) is in the field's own unit; a string
    with a unit is converted exactly. Refused, with the field, the value and
    what is allowed: non-finite and negative values, values above the sanity
    ceilings (``units.MAX_*``), and positive values that round to 0 in base
    units (``0.0000000001 GB/s`` would otherwise be stored as 0 B/s).
    """
    if spec.unit is Unit.TEXT:
        if not isinstance(raw, str):
            raise ConfigError(path, raw, allowed_text(spec))
        return raw
    if spec.unit is Unit.CHOICE:
        assert spec.choices is not None
        try:
            return spec.choices(raw)
        except (ValueError, TypeError):
            raise ConfigError(path, raw, allowed_text(spec)) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ConfigError(path, raw, allowed_text(spec))
    try:
        if spec.unit in (Unit.FRACTION, Unit.FACTOR, Unit.SECONDS_F):
            return _to_float(raw, spec)
        return _to_base(raw, spec)
    except units.RoundsToZero as exc:
        raise ConfigError(path, raw, f"{allowed_text(spec)}; {exc}") from None
    except ValueError:
        raise ConfigError(path, raw, allowed_text(spec)) from None


def _to_base(raw: int | float | str, spec: FieldSpec) -> int:
    scale = 1 if spec.unit is Unit.COUNT else _SCALE[spec.unit]
    ceiling = MAX_COUNT if spec.unit is Unit.COUNT else _MAX_BASE[spec.unit]
    value: Decimal | int | float = raw if not isinstance(raw, str) else Decimal(0)
    if isinstance(raw, str):
        number, unit = units.split_quantity(raw)
        if unit:
            if spec.unit in _SIZE_UNITS:
                out = units.parse_size_bytes(raw)
            elif spec.unit in _BW_UNITS:
                out = units.parse_bw_bytes_per_s(raw)
            elif spec.unit in _TIME_UNITS:
                out = units.parse_time_ns(raw)
            elif spec.unit is Unit.TFLOPS:
                out = units.parse_flops_per_s(raw)
            else:
                raise ValueError(f"no unit expected, got {unit[:16]!r}")
            return _in_range(out, spec)
        value = number
    if spec.unit is Unit.COUNT and not _is_integral(value):
        raise ValueError("not an integer")
    return _in_range(units.to_base_int(value, scale, ceiling, spec.yaml_key), spec)


def _is_integral(value: Decimal | int | float) -> bool:
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value == int(value)
    return value.is_finite() and value == value.to_integral_value()


def _in_range(out: int, spec: FieldSpec) -> int:
    if out == 0 and not spec.allow_zero:
        raise ValueError("is 0")
    scale = 1 if spec.unit is Unit.COUNT else _SCALE[spec.unit]
    if spec.max_value is not None and out > spec.max_value * scale:
        raise ValueError("above the maximum")
    return out


def _to_float(raw: int | float | str, spec: FieldSpec) -> float:
    if isinstance(raw, str):
        number, unit = units.split_quantity(raw)
        if unit and not (spec.unit is Unit.SECONDS_F and unit == "s"):
            raise ValueError(f"no unit expected, got {unit[:16]!r}")
        raw = float(number)
    try:
        value = float(raw)
    except OverflowError:
        raise ValueError("too large") from None
    if not math.isfinite(value):
        raise ValueError("not finite")
    if value < 0 or (value == 0 and not spec.allow_zero):
        raise ValueError("out of range")
    if value > _max_in_unit(spec):
        raise ValueError("above the maximum")
    return value


def field_specs(cls: type) -> list[tuple[str, FieldSpec]]:
    """(attribute name, spec) for every schema field of a section dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is not None:
            out.append((f.name, spec))
    return out


def build_section(cls: type, path: str, raw: object, sources: dict[str, str],
                  knobs: set[str]) -> Any:
    """Build one section dataclass from its YAML mapping; records each leaf's source."""
    if not isinstance(raw, dict):
        raise ConfigError(path, raw, "a mapping of fields")
    specs = field_specs(cls)
    by_key = {spec.yaml_key: (name, spec) for name, spec in specs}
    unknown = sorted(set(raw) - set(by_key))
    if unknown:
        bad, _, _ = split_leaf(f"{path}.{unknown[0]}", raw[unknown[0]])
        raise ConfigError(f"{path}.{unknown[0]}", bad,
                          "one of the known keys: " + ", ".join(sorted(by_key)))
    kwargs: dict[str, Any] = {}
    for key, (name, spec) in by_key.items():
        leaf_path = f"{path}.{key}"
        if key not in raw:
            raise ConfigError(leaf_path, "<missing>", "required field: " + allowed_text(spec))
        value, source, knob = split_leaf(leaf_path, raw[key])
        kwargs[name] = convert(leaf_path, value, spec)
        sources[leaf_path] = source
        if knob:
            knobs.add(leaf_path)
    return cls(**kwargs)


def split_leaf(path: str, leaf: object) -> tuple[object, str, bool]:
    """A leaf is ``{value, source, knob}`` (shipped profiles) or a bare value (user files)."""
    if isinstance(leaf, dict):
        extra = sorted(set(leaf) - {"value", "source", "knob"})
        if extra or "value" not in leaf:
            raise ConfigError(path, leaf, "a value, or a mapping with keys value, source, knob")
        knob = leaf.get("knob", False)
        if not isinstance(knob, bool):
            raise ConfigError(f"{path}.knob", knob, "true or false")
        return leaf["value"], str(leaf.get("source", "user")), knob
    return leaf, "user", False


def to_base_dict(obj: Any) -> Any:
    """A section dataclass as a JSON-able dict in base units (enums by value)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_base_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_base_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_base_dict(v) for k, v in obj.items()}
    return obj
