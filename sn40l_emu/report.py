"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sn40l_emu.config import NodeProfile
from sn40l_emu.schema import Unit, field_specs

_SECTIONS = ("node", "socket", "dma", "host", "tile", "launch", "p2p", "runtime", "nccl")


def _human(value: Any, unit: Unit) -> str:
    from sn40l_emu import units as u

    if unit in (Unit.B, Unit.KIB, Unit.MIB, Unit.GIB, Unit.TIB, Unit.TB):
        return u.fmt_bytes(value) if value else "0 B"
    if unit is Unit.TBPS:
        return f"{value / u.TB:g} TB/s"
    if unit is Unit.GBPS:
        return f"{value / u.GB:g} GB/s"
    if unit is Unit.TFLOPS:
        return f"{value / u.TFLOPS:g} TFLOP/s"
    if unit in (Unit.NS, Unit.US):
        return u.fmt_ns(value)
    if unit is Unit.SECONDS_F:
        return f"{value:g} s"
    if hasattr(value, "value"):
        return str(value.value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def profile_table(p: NodeProfile) -> str:
    lines = [f"profile {p.name}: {p.description}", ""]
    knobs = set(p.knobs)
    for section in _SECTIONS:
        obj = getattr(p, section)
        for attr, spec in field_specs(type(obj)):
            path = f"{section}.{spec.yaml_key}"
            mark = "knob" if path in knobs else ""
            lines.append(f"  {path:32s} {_human(getattr(obj, attr), spec.unit):>16s}  {mark:4s}  {p.source_of(path)}")
    return "\n".join(lines)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A fixed-width table: ``columns`` is (key, header)."""
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    out = ["  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
