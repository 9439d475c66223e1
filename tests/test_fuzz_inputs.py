"""Fuzz: profiles, scenarios, ``--set`` values and JSONL traces never crash the loaders.

Property, over 1,000 profiles, 1,000 scenarios, 500 ``--set`` values and 200
request traces (``--workload FILE.jsonl``): loading
returns a valid object or raises a typed project error (an ``EmuError``, in
practice ``ConfigError``), never anything else; its message is one short line;
and the load allocates at most ``ALLOC_BOUND_BYTES`` (tracemalloc peak, around
the call alone). A profile that loads has every quantity inside its declared
range, so no later ``transfer_ns`` can divide by a zero bandwidth, and its
``to_json()`` (``profile show --json``) loads back as the same profile.

Inputs are real files written as a user would write them (a shipped profile
``extends``-ed and changed, a scenario with events), mutated: values of every
YAML type (nan, inf, 400-digit integers, quantities with odd units such as
``1e400 GiB`` or ``0.0000000001 GB/s``), keys dropped or invented, and the
text itself cut or spliced with aliases, deep brackets, tags and control
characters. Settings are derandomized: every run tries the same inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sn40l_emu import config, units
from sn40l_emu.coe.workload import MAX_TRACE_INT, WorkloadKind, parse_workload
from sn40l_emu.config import NodeProfile, load_profile
from sn40l_emu.errors import EmuError
from sn40l_emu.inject.events import EVENT_TYPES, FieldKind
from sn40l_emu.inject.scenario import EventKind, Scenario, load_scenario
from sn40l_emu.schema import MAX_COUNT, Unit, field_specs

# About a minute of fuzzing: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

PROFILE_EXAMPLES = int(os.environ.get("SN40L_FUZZ_PROFILES", "1000"))
SCENARIO_EXAMPLES = int(os.environ.get("SN40L_FUZZ_SCENARIOS", "1000"))
SET_EXAMPLES = int(os.environ.get("SN40L_FUZZ_SETS", "500"))
TRACE_EXAMPLES = int(os.environ.get("SN40L_FUZZ_TRACES", "200"))
# Generated files are under 8 KiB; the loaders may hold a few copies of the parsed
# tree and of the shipped profile. 16 MiB is far above that and far below what an
# expansion (alias bomb) or a value-sized allocation (1e400 of anything) would take.
ALLOC_BOUND_BYTES = 16 << 20

_FUZZ = settings(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_SECTIONS = {name: cls for name, cls in config._SECTIONS.items()}
_PATHS = sorted(f"{sec}.{spec.yaml_key}" for sec, cls in _SECTIONS.items() for _, spec in field_specs(cls))

# ---- value strategies ------------------------------------------------------------

_NUMBER_TEXT = st.one_of(
    st.sampled_from(["1e400", "0", "-1", ".5", "1e-400", "0.0000000001", "nan", ".inf", "-.inf", "9" * 400,
                     "1_000", "0x10", "1e", "", "64", "1.8", "2**63", "1e18", "1e15", "4.5e-9"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)
_UNIT_TEXT = st.sampled_from(["", "B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "G", "k", "GB/s",
                              "TB/s", "B/s", "us", "ns", "ms", "s", "TFLOP/s", "FLOP/s", "furlongs", "/", "Gb/s"])
quantities = st.builds(lambda n, sep, u: f"{n}{sep}{u}", _NUMBER_TEXT, st.sampled_from(["", " ", "  "]), _UNIT_TEXT)
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([10**400, -(10**400), 2**63, 2**64, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    quantities, st.text(max_size=30),
)
plausible = st.one_of(
    st.floats(min_value=1e-3, max_value=1e4), st.integers(1, 10**6),
    st.builds(lambda n, u: f"{n} {u}", st.integers(1, 4096),
              st.sampled_from(["GiB", "MiB", "GB/s", "TB/s", "us", "ns"])),
)


def _valid_for(spec_unit: Unit) -> st.SearchStrategy[Any]:
    """Values a field of this unit accepts (so that many generated profiles load)."""
    if spec_unit is Unit.COUNT:
        return st.integers(1, 64)
    if spec_unit is Unit.FRACTION:
        return st.floats(0.01, 1.0)
    if spec_unit in (Unit.FACTOR, Unit.SECONDS_F):
        return st.floats(0.01, 100.0)
    if spec_unit in (Unit.CHOICE, Unit.TEXT):
        return st.sampled_from(["full_mesh", "ring", "switch", "sn40l", "gpu"])
    return st.one_of(st.floats(0.5, 4096.0), st.integers(1, 4096))


_SPEC = {f"{sec}.{spec.yaml_key}": spec for sec, cls in config._SECTIONS.items() for _, spec in field_specs(cls)}
values = st.one_of(
    plausible, plausible, plausible,
    scalars, scalars, scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.sampled_from(["value", "source", "knob", "x"]), scalars, max_size=3),
)
# Text spliced into a document: what hostile or broken files contain.
_SPLICES = st.sampled_from([
    "*a", "&a ", "&a [1, *a]", "[" * 200, "{" * 50, "!!python/object:os.system ", "!!binary ", "\x00", "\t",
    "\ufeff", "\x85", ": ", "- ", "? ", "'", '"', "#", "%YAML 1.1\n---\n", "---\n", "...\n", "<<: *a\n",
    "\n  ", "9" * 5000, "!!float ", "!!int ", "~", "\\", "\r\n",
])


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` cut or spliced at a few places (two times in three unchanged)."""
    if draw(st.integers(0, 2)):
        return text
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["splice", "cut", "insert_text"]))
        if op == "splice":
            text = text[:pos] + draw(_SPLICES) + text[pos:]
        elif op == "cut":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        else:
            text = text[:pos] + draw(st.text(max_size=8)) + text[pos:]
    return text


def _dump(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=_DUMPER, default_flow_style=None, allow_unicode=True))


# ---- the property ------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sn40l-fuzz-") as d:
        yield Path(d)


def _load_checked(load: Callable[[], Any]) -> Any:
    """Run one load: its result, or None after a typed error; checks the allocation bound."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        try:
            result = load()
            event("loaded")
        except EmuError as exc:
            event(f"refused: {type(exc).__name__}")
            msg = str(exc)
            assert "\n" not in msg and len(msg) < 700, msg[:2000]
            result = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before <= ALLOC_BOUND_BYTES, peak - before
    return result


def _assert_in_range(p: NodeProfile) -> None:
    """Every quantity of a profile that loaded is finite, in range and non-zero unless allowed."""
    for sec, cls in _SECTIONS.items():
        obj = getattr(p, sec)
        for attr, spec in field_specs(cls):
            v = getattr(obj, attr)
            if spec.unit in (Unit.CHOICE, Unit.TEXT):
                continue
            assert v == v and v >= 0, (sec, attr, v)
            assert v > 0 or spec.allow_zero, (sec, attr, v)
            if spec.unit is Unit.COUNT:
                assert isinstance(v, int) and v <= MAX_COUNT
            elif spec.unit in (Unit.FRACTION, Unit.FACTOR, Unit.SECONDS_F):
                assert isinstance(v, float) and v < float("inf")
            else:
                assert isinstance(v, int) and v <= max(units.MAX_SIZE_BYTES, units.MAX_BW_BYTES_PER_S,
                                                       units.MAX_FLOPS_PER_S, units.MAX_TIME_NS)
    p.to_json()


# ---- profiles ----------------------------------------------------------------------

@st.composite
def profile_docs(draw: st.DrawFn) -> str:
    doc: dict[Any, Any] = {"extends": draw(st.sampled_from(["sn40l"] * 6 + ["dgx-a100", "dgx-h100",
                                                                         "nope", 5, None]))}
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_PATHS))
        sec, key = path.split(".")
        doc.setdefault(sec, {})[key] = draw(st.one_of(_valid_for(_SPEC[path].unit), values))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["name", "description", "bogus", *_SECTIONS]))] = draw(values)
    return draw(mutated_text(_dump(doc)))


@settings(_FUZZ, max_examples=PROFILE_EXAMPLES)
@given(text=profile_docs())
def test_profile_files(workdir: Path, text: str) -> None:
    f = workdir / "profile.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    p = _load_checked(lambda: load_profile(str(f)))
    if p is not None:
        _assert_in_range(p)
        saved = workdir / "saved.json"  # what `profile show --json` prints loads back unchanged
        saved.write_text(json.dumps(p.to_json()))
        assert load_profile(str(saved)) == p


# ---- --set values ------------------------------------------------------------------

@settings(_FUZZ, max_examples=SET_EXAMPLES)
@given(key=st.one_of(st.sampled_from(_PATHS), st.sampled_from(_PATHS), st.text(max_size=20)),
       value=st.one_of(quantities, quantities, st.text(max_size=40), _SPLICES, values.map(_dump)))
def test_set_values(key: str, value: str) -> None:
    p = _load_checked(lambda: load_profile("sn40l", [f"{key}={value}"]))
    if p is not None:
        _assert_in_range(p)


# ---- scenarios ---------------------------------------------------------------------

_EVENT_KEYS = ["kind", "at", "after_requests", "socket", "src", "dst", "mode", "restart", "both_ways",
               "bw_factor", "extra_latency", "factor", "compute_factor", "bogus"]
_WORKLOAD_KEYS = ["kind", "experts", "batch", "tokens", "batches", "size_bytes", "repeats", "algo", "chunks",
                  "sockets", "seed", "workload", "policy", "bogus"]


@st.composite
def good_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([k.value for k in EventKind]))
    ev: dict[str, Any] = {"kind": kind}
    if draw(st.booleans()):
        ev["at"] = draw(st.sampled_from(["5ms", "0", 0, "250us", "1s", 10**6]))
    else:
        ev["after_requests"] = draw(st.integers(0, 40))
    good = {FieldKind.SOCKET: st.integers(0, 7), FieldKind.SOCKETS: st.sampled_from(["all", 3, [1, 2]]),
            FieldKind.FACTOR: st.floats(0.01, 10), FieldKind.TIME: st.sampled_from(["2us", 0, "1ms"]),
            FieldKind.BOOL: st.booleans(), FieldKind.MODE: st.sampled_from(["virtual", "process"])}
    for f in dataclasses.fields(EVENT_TYPES[EventKind(kind)]):
        if f.default is dataclasses.MISSING:  # a required field of this event kind
            ev[f.metadata["yaml"] or f.name] = draw(good[f.metadata["kind"]])
    if "src" in ev:
        ev["src"], ev["dst"] = 0, 1
    return ev


@st.composite
def scenario_docs(draw: st.DrawFn) -> str:
    workload: dict[str, Any] = {"kind": draw(st.sampled_from(["coe", "allreduce", "bogus"])), "experts": 10}
    events = draw(st.lists(good_event(), max_size=2))
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["event", "event", "workload", "top"]))
        dicts = [e for e in events if isinstance(e, dict)]
        if target == "event" and dicts:
            ev = dicts[draw(st.integers(0, len(dicts) - 1))]
            ev[draw(st.sampled_from(_EVENT_KEYS))] = draw(values)
        elif target == "workload":
            workload[draw(st.sampled_from(_WORKLOAD_KEYS))] = draw(values)
        else:
            events.append(draw(values))
    doc: dict[str, Any] = {"name": "fuzz", "backend": "local", "workload": workload, "events": events}
    if draw(st.integers(0, 4)) == 0:
        doc[draw(st.sampled_from(["name", "profile", "set", "backend", "workload", "events", "bogus"]))] = draw(values)
    return draw(mutated_text(_dump(doc)))


@settings(_FUZZ, max_examples=SCENARIO_EXAMPLES)
@given(text=scenario_docs())
def test_scenario_files(workdir: Path, text: str) -> None:
    f = workdir / "scenario.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    sc = _load_checked(lambda: load_scenario(f))
    if sc is not None:
        assert isinstance(sc, Scenario)
        for ev in sc.events:
            assert ev.at_ns is None or 0 <= ev.at_ns <= units.MAX_TIME_NS
            for _, v in ev.event.params():
                if isinstance(v, float):
                    assert 0 < v < float("inf")


# ---- JSONL request traces ------------------------------------------------------------

_TRACE_KEYS = ["prompt", "expert", "prompt_len", "output_tokens"]
_JSON_SPLICES = st.sampled_from([
    "[" * 5000, "{" * 40, '"', "\\", "NaN", "Infinity", "-Infinity", "9" * 5000, "1e400", "\x00", "\n",
    "\ud800", "null", "true", ",", ":", "}", "]", '{"a": {"b": 1}}', "\ufeff",
])


@st.composite
def trace_docs(draw: st.DrawFn) -> str:
    """A few request lines as a user writes them, then values and keys changed and the text spliced."""
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        rec: dict[str, Any] = {"prompt": draw(st.one_of(st.text(max_size=10), st.integers(0, 99))),
                               "expert": draw(st.integers(0, 9)), "prompt_len": draw(st.integers(1, 512)),
                               "output_tokens": draw(st.integers(1, 64))}
        if draw(st.integers(0, 2)) == 0:
            rec[draw(st.sampled_from([*_TRACE_KEYS, "bogus"]))] = draw(values)
        if draw(st.integers(0, 5)) == 0:
            del rec[draw(st.sampled_from(_TRACE_KEYS))]
        lines.append(json.dumps(rec) if draw(st.integers(0, 5)) else _dump(rec).strip())
    text = "\n".join(lines)
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.one_of(_JSON_SPLICES, _SPLICES, st.text(max_size=8))) + text[pos:]
    return text


@settings(_FUZZ, max_examples=TRACE_EXAMPLES)
@given(text=trace_docs())
def test_trace_files(workdir: Path, text: str) -> None:
    f = workdir / "trace.jsonl"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    spec = _load_checked(lambda: parse_workload(str(f)))
    if spec is not None:
        assert spec.kind is WorkloadKind.TRACE and spec.trace
        for r in spec.trace:
            assert 0 <= r.expert <= MAX_TRACE_INT and 1 <= r.prompt_len <= MAX_TRACE_INT
            assert 1 <= r.output_tokens <= MAX_TRACE_INT and isinstance(r.prompt, (str, int))
