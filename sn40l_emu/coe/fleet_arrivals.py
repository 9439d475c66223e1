"""Request arrivals from a CSV trace: timestamp, expert or domain, prompt tokens, output tokens.

Accepted column names (case-insensitive; the first match wins):

- arrival: ``timestamp``, ``arrival_s``, ``time_s`` -- seconds (a number), or a
  date-time such as the Azure LLM inference trace's ``2023-11-16 18:15:46.6805900``;
  times are taken relative to the earliest row and rounded to whole ns;
- expert: ``expert`` (an integer id) or ``domain`` (any text; domains become
  expert ids 0, 1, ... in order of first appearance). Optional: a trace
  without one (the Azure traces have none) draws experts from the workload;
- prompt tokens: ``prompt_tokens``, ``contexttokens``, ``input_tokens``;
- output tokens: ``output_tokens``, ``generatedtokens``.

So the Azure LLM inference trace (columns ``TIMESTAMP, ContextTokens,
GeneratedTokens``) is read as is. Rows come back sorted by arrival (ties in
file order), with request ids 0.. in that order.

Read with the bounds of every user file (``coe.workload``): at most
``MAX_TRACE_BYTES``, UTF-8, every row as long as the columns it needs, finite
times spanning at most ``units.MAX_TIME_NS``, token counts and expert ids
within ``MAX_TRACE_INT``; anything else is a ``ConfigError`` naming the row.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sn40l_emu.coe.workload import MAX_TRACE_INT, Request, read_trace_text
from sn40l_emu.errors import ConfigError
from sn40l_emu.units import MAX_TIME_NS, NS_PER_S

_COLUMNS = {
    "arrival": ("timestamp", "arrival_s", "time_s"),
    "expert": ("expert",),
    "domain": ("domain",),
    "prompt": ("prompt_tokens", "contexttokens", "input_tokens"),
    "output": ("output_tokens", "generatedtokens"),
}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _find(header: Sequence[str], key: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in _COLUMNS[key]:
        if name in lowered:
            return lowered.index(name)
    return None


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ConfigError(where, text, "a finite number of seconds or an ISO date-time")
        return value
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip())).timestamp()
    except (ValueError, OverflowError):
        raise ConfigError(where, text, "seconds or an ISO date-time") from None


def read_rows(path: str | Path) -> list[list[str]]:
    """The CSV file's rows, read within the bounds (ConfigError naming the file otherwise)."""
    text = read_trace_text(path, "trace")
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a NUL byte, a field over csv's 128 KiB limit
        raise ConfigError("trace", str(path), f"a CSV file ({exc})") from None


def _count(text: str, where: str, minimum: int) -> int:
    try:
        value = int(float(text))
    except (ValueError, OverflowError):  # not a number; inf
        raise ConfigError(where, text, f"an integer in [{minimum}, {MAX_TRACE_INT}]") from None
    if not minimum <= value <= MAX_TRACE_INT:
        raise ConfigError(where, text, f"an integer in [{minimum}, {MAX_TRACE_INT}]")
    return value


def read_trace_csv(path: str | Path, n_experts: int,
                   experts_if_missing: Sequence[int] | None = None) -> list[Request]:
    """The trace's requests (see the module docstring); ConfigError names a bad cell.

    ``experts_if_missing`` gives row i's expert when the trace has neither
    ``expert`` nor ``domain`` (one per row, in file order).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("trace", str(path), "an existing CSV file")
    rows = read_rows(p)
    if len(rows) < 2:
        raise ConfigError("trace", str(path), "a header row and at least one request")
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    cols = {k: _find(header, k) for k in _COLUMNS}
    for need in ("arrival", "prompt", "output"):
        if cols[need] is None:
            raise ConfigError("trace columns", ",".join(header), f"a column among {_COLUMNS[need]}")
    if cols["expert"] is None and cols["domain"] is None and (
            experts_if_missing is None or len(experts_if_missing) < len(body)):
        raise ConfigError("trace columns", ",".join(header), "an expert or domain column")
    domains: dict[str, int] = {}
    parsed = []
    width = 1 + max(c for c in cols.values() if c is not None)
    for i, row in enumerate(body):
        where = f"{p.name} row {i + 2}"
        if len(row) < width:
            raise ConfigError(where, ",".join(row), f"a row of at least {width} cells, like the header")
        t = _seconds(row[cols["arrival"]], f"{where} timestamp")  # type: ignore[index]
        if cols["expert"] is not None:
            e = _count(row[cols["expert"]], f"{where} expert", 0)
        elif cols["domain"] is not None:
            e = domains.setdefault(row[cols["domain"]].strip(), len(domains))
        else:
            assert experts_if_missing is not None
            e = int(experts_if_missing[i])
        if e >= n_experts:
            raise ConfigError(f"{where} expert", e, f"an expert id < {n_experts} (--experts)")
        prompt = _count(row[cols["prompt"]], f"{where} prompt tokens", 1)  # type: ignore[index]
        out = _count(row[cols["output"]], f"{where} output tokens", 1)  # type: ignore[index]
        parsed.append((t, i, e, prompt, out))
    parsed.sort()
    t0 = parsed[0][0]
    span_ns = (parsed[-1][0] - t0) * NS_PER_S
    if not span_ns <= MAX_TIME_NS:
        raise ConfigError("trace timestamps", f"a span of {span_ns / NS_PER_S:g} s",
                          f"arrivals within {MAX_TIME_NS // NS_PER_S} s of each other")
    return [Request(k, e, prompt, out, int(round((t - t0) * NS_PER_S)))
            for k, (t, _, e, prompt, out) in enumerate(parsed)]
