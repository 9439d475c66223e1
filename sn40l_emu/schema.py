"""A tiny declarative schema: YAML leaves in human units -> frozen dataclasses in base units.

Each dataclass field carries metadata naming its YAML key, its unit and its
allowed range. One generic loader walks the fields, so every section gets the
same clear errors (field path, value, what is allowed) without per-field code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
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


def allowed_text(spec: FieldSpec) -> str:
    if spec.unit is Unit.CHOICE and spec.choices is not None:
        return "one of " + ", ".join(repr(c.value) for c in spec.choices)
    if spec.unit is Unit.TEXT:
        return "a string"
    if spec.unit is Unit.COUNT:
        low = ">= 0" if spec.allow_zero else ">= 1"
        return f"an integer {low}" + (f" and <= {spec.max_value:g}" if spec.max_value else "")
    low = ">= 0" if spec.allow_zero else "> 0"
    high = f" and <= {spec.max_value:g}" if spec.max_value is not None else ""
    example = ""
    if spec.unit in _SIZE_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '64 GiB')"
    elif spec.unit in _BW_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '50 GB/s')"
    elif spec.unit in _TIME_UNITS:
        example = f" (a number in {spec.unit.value}, or a string like '1 us')"
    return f"a number {low}{high}{example}"


def convert(path: str, raw: object, spec: FieldSpec) -> Any:
    """Validate one YAML value and convert it to the field's base unit."""
    if spec.unit is Unit.TEXT:
        if not isinstance(raw, str):
            raise ConfigError(path, raw, allowed_text(spec))
        return raw
    if spec.unit is Unit.CHOICE:
        assert spec.choices is not None
        try:
            return spec.choices(raw)
        except ValueError:
            raise ConfigError(path, raw, allowed_text(spec)) from None
    value: float
    if isinstance(raw, bool):
        raise ConfigError(path, raw, allowed_text(spec))
    if isinstance(raw, str):
        try:
            if spec.unit in _SIZE_UNITS:
                return _check_num(path, raw, float(units.parse_size_bytes(raw)), spec, base=True)
            if spec.unit in _BW_UNITS:
                return _check_num(path, raw, float(units.parse_bw_bytes_per_s(raw)), spec, base=True)
            if spec.unit in _TIME_UNITS:
                return _check_num(path, raw, float(units.parse_time_ns(raw)), spec, base=True)
            value = float(raw)
        except ValueError:
            raise ConfigError(path, raw, allowed_text(spec)) from None
    elif isinstance(raw, (int, float)):
        value = float(raw)
    else:
        raise ConfigError(path, raw, allowed_text(spec))
    return _check_num(path, raw, value, spec, base=False)


def _check_num(path: str, raw: object, value: float, spec: FieldSpec, *, base: bool) -> Any:
    if not math.isfinite(value) or value < 0 or (value == 0 and not spec.allow_zero):
        raise ConfigError(path, raw, allowed_text(spec))
    if spec.max_value is not None and value > spec.max_value and not base:
        raise ConfigError(path, raw, allowed_text(spec))
    if spec.unit is Unit.COUNT:
        if value != int(value):
            raise ConfigError(path, raw, allowed_text(spec))
        return int(value)
    if spec.unit in (Unit.FRACTION, Unit.FACTOR, Unit.SECONDS_F):
        if spec.unit is Unit.FRACTION and value > 1:
            raise ConfigError(path, raw, "a fraction > 0 and <= 1")
        return value
    scale = 1 if base else _SCALE[spec.unit]
    return int(round(value * scale))


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
