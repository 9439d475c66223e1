"""Published measurements as cases, and the one function per metric that predicts each.

A case file (``validation/*.yaml``) holds ``cases:``, a list of mappings:

* ``id`` (unique over all files), ``source`` (paper and table, or project and
  file/issue, exactly where the number was read), ``role``: ``calibration``
  (knobs may be fitted to it) or ``validation`` (never fitted to);
* the configuration: ``platform`` (a shipped profile name), ``model``, ``tp``,
  ``batch``, ``prompt_len``, ``output_tokens``, ``phase``, ``metric``
  (collective cases: ``size_bytes`` and ``algo`` instead of the model fields);
* ``value`` and ``unit``: the measured number as published;
* optional ``mode`` (SN40L execution mode, default ``fused-ho``), ``set``
  (profile settings the measurement was taken with, as ``--set`` strings, e.g.
  ``runtime.spec_draft_model=llama3.1-8b``), ``assumed`` (configuration fields
  the source does not state, so the case had to choose them) and ``note``.

Every prediction goes through the emulator's normal run path, so a mechanism
added to the model changes the predictions without touching this file:

* ``e2e_latency``: a ``generate`` row of :func:`~sn40l_emu.experiments.tp_scaling.run_scaling`
  (prefill of the prompt, which yields output token 1, then ``output_tokens - 1``
  decode steps);
* ``output_tokens_per_s``: ``output_tokens`` / that end-to-end latency (the
  LMDeploy ``profile_generation`` definition: generated tokens over total time,
  prefill included);
* ``ttft``: a ``prefill`` row (time to the first token);
* ``tokens_per_s_per_user``: 1 / one ``decode`` step at context ``prompt_len``
  (phase ``speculative``: expected tokens per speculative iteration / its latency);
* ``busbw``: one all-reduce of ``size_bytes`` on sockets ``0..tp-1`` through
  :func:`~sn40l_emu.experiments.allreduce_bench.run_bench` (nccl-tests' busbw).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sn40l_emu.errors import ConfigError

ROLES = ("calibration", "validation")
METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # metric -> (phases it may run as, units it may be published in)
    "e2e_latency": (("generate",), ("s", "ms", "us")),
    "output_tokens_per_s": (("generate",), ("tok/s",)),
    "ttft": (("prefill",), ("s", "ms", "us")),
    "tokens_per_s_per_user": (("decode", "speculative"), ("tok/s",)),
    "busbw": (("collective",), ("GB/s",)),
}
_TIME_NS = {"s": 1e9, "ms": 1e6, "us": 1e3}
_REQUIRED = ("id", "source", "role", "platform", "tp", "phase", "metric", "value", "unit")
_MODEL_FIELDS = ("model", "batch", "prompt_len")
# what ``assumed`` may name besides the SECTION.FIELD of a ``set`` entry
_CONFIG_FIELDS = ("platform", "model", "tp", "batch", "prompt_len", "output_tokens", "phase", "mode", "size_bytes",
                  "algo")
_OPTIONAL = ("model", "batch", "prompt_len", "output_tokens", "mode", "size_bytes", "algo", "set", "assumed", "note")


@dataclass(frozen=True)
class Case:
    """One published measurement and the configuration it was taken at."""

    id: str
    source: str
    role: str
    platform: str
    tp: int
    phase: str
    metric: str
    value: float
    unit: str
    file: str = ""
    model: str = ""
    batch: int = 1
    prompt_len: int = 0
    output_tokens: int = 0
    mode: str = ""
    size_bytes: int = 0
    algo: str = "auto"
    settings: tuple[str, ...] = field(default_factory=tuple)  # YAML key ``set``
    assumed: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.unit in ("tok/s", "GB/s")


def _int(path: str, raw: object, *, minimum: int = 1) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise ConfigError(path, raw, f"an integer >= {minimum}")
    return raw


def _check_settings(path: str, platform: str, phase: str, settings: list[str]) -> None:
    """The case's ``set`` must load on its platform's profile, and a speculative case must name its draft model.

    On a shipped profile every setting is applied and the profile validated as
    ``--set`` would be (unknown field, out-of-range value: ConfigError naming
    ``<case>.set``); on any other platform only the SECTION.FIELD=VALUE form is
    checked here, and the rest when the case runs.
    """
    from sn40l_emu.config import apply_overrides, load_profile, shipped_profiles
    from sn40l_emu.workload import shipped_models

    try:
        if platform in shipped_profiles():
            draft = load_profile(platform, settings).runtime.spec_draft_model
        else:
            apply_overrides({}, settings)
            draft = next((s.partition("=")[2].strip() for s in settings
                          if s.partition("=")[0].strip() == "runtime.spec_draft_model"), "")
    except ConfigError as exc:
        raise ConfigError(f"{path}.set.{exc.field}", exc.value, exc.allowed) from None
    if phase == "speculative" and draft not in shipped_models():
        raise ConfigError(f"{path}.set", draft or "<no runtime.spec_draft_model>",
                          "runtime.spec_draft_model=NAME, a shipped model, for phase speculative: "
                          + ", ".join(shipped_models()))


def case_from(raw: object, where: str) -> Case:
    """Validate one mapping of a case file (raises ConfigError naming the field)."""
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a mapping with keys " + ", ".join(_REQUIRED))
    cid = raw.get("id", "?")
    path = f"{where}[{cid}]"
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", raw[unknown[0]], "one of " + ", ".join((*_REQUIRED, *_OPTIONAL)))
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{path}.{key}", "<missing>", "a required case field")
    for key in ("id", "source", "platform"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ConfigError(f"{path}.{key}", raw[key], "a non-empty string")
    if raw["role"] not in ROLES:
        raise ConfigError(f"{path}.role", raw["role"], " or ".join(ROLES))
    metric = raw["metric"]
    if metric not in METRICS:
        raise ConfigError(f"{path}.metric", metric, ", ".join(METRICS))
    phases, units = METRICS[metric]
    phase = raw["phase"]
    if phase not in phases:
        raise ConfigError(f"{path}.phase", phase, " or ".join(phases) + f" for metric {metric}")
    if raw["unit"] not in units:
        raise ConfigError(f"{path}.unit", raw["unit"], " or ".join(units))
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}.value", value, "a positive number")
    assumed = raw.get("assumed", [])
    if not isinstance(assumed, list) or not all(isinstance(a, str) for a in assumed):
        raise ConfigError(f"{path}.assumed", assumed, "a list of configuration field names")
    settings = raw.get("set", [])
    if not isinstance(settings, list) or not all(isinstance(x, str) and "=" in x for x in settings):
        raise ConfigError(f"{path}.set", settings, "a list of SECTION.FIELD=VALUE profile settings")
    _check_settings(path, raw["platform"], phase, settings)
    allowed = {*_CONFIG_FIELDS, *(s.partition("=")[0].strip() for s in settings)}
    for a in assumed:
        if a not in allowed:
            raise ConfigError(f"{path}.assumed", a, "a configuration field of the case or a SECTION.FIELD of its "
                              "set: " + ", ".join(sorted(allowed)))
    kw: dict[str, Any] = {"settings": tuple(settings)}
    if phase == "collective":
        kw["size_bytes"] = _int(f"{path}.size_bytes", raw.get("size_bytes"))
        kw["algo"] = str(raw.get("algo", "auto"))
    else:
        for key in _MODEL_FIELDS:
            if key not in raw:
                raise ConfigError(f"{path}.{key}", "<missing>", f"required for metric {metric}")
        if not isinstance(raw["model"], str):
            raise ConfigError(f"{path}.model", raw["model"], "a shipped model name")
        kw["model"] = raw["model"]
        kw["batch"] = _int(f"{path}.batch", raw["batch"])
        kw["prompt_len"] = _int(f"{path}.prompt_len", raw["prompt_len"])
        if phase == "generate":
            kw["output_tokens"] = _int(f"{path}.output_tokens", raw.get("output_tokens"))
        kw["mode"] = str(raw.get("mode", ""))
    return Case(id=cid, source=raw["source"].strip(), role=raw["role"], platform=raw["platform"],
                tp=_int(f"{path}.tp", raw["tp"]), phase=phase, metric=metric, value=float(value),
                unit=raw["unit"], file=where, assumed=tuple(assumed), note=str(raw.get("note", "")).strip(), **kw)


def case_files(path: str | Path) -> list[Path]:
    """``path`` itself if it is a file, else every ``*.yaml`` in it, sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError("--cases", str(path), "a case YAML file or a directory of them")
    files = sorted(p.glob("*.yaml"))
    if not files:
        raise ConfigError("--cases", str(path), "a directory holding at least one *.yaml case file")
    return files


def load_cases(path: str | Path) -> list[Case]:
    """Every case of ``path`` (a file or a directory), ids unique over all files."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for f in case_files(path):
        try:
            data = yaml.safe_load(f.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(str(f), "<unparsable>", f"valid YAML ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise ConfigError(str(f), type(data).__name__, "a mapping with a list under 'cases'")
        for raw in data["cases"]:
            case = case_from(raw, f.as_posix())
            if case.id in seen:
                raise ConfigError(f"{f.as_posix()}[{case.id}].id", case.id,
                                  f"an id not already used in {seen[case.id]}")
            seen[case.id] = f.as_posix()
            cases.append(case)
    return cases


# ---- prediction: one function per metric -------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Which profile a prediction runs on: a shipped name or a YAML path, plus ``--set`` overrides."""

    profile: str
    overrides: tuple[str, ...] = ()
    backend: str = "local"


def _overrides(case: Case, target: Target) -> list[str]:
    """The case's own settings, then the target's (calibration knobs come last and win)."""
    return [*case.settings, *target.overrides]


def _scaling_row(case: Case, target: Target, phase: str) -> dict[str, Any]:
    from sn40l_emu.experiments.tp_scaling import ScalingConfig, run_scaling

    mode = case.mode or "fused-ho"  # a GPU profile runs every row in 'gpu' mode whatever this says
    cfg = ScalingConfig(model=case.model, tps=(case.tp,), phases=(phase,), modes=(mode,), profile=target.profile,
                        overrides=tuple(_overrides(case, target)), batch=case.batch, prompt_len=case.prompt_len,
                        context_len=case.prompt_len, tokens=case.output_tokens if phase == "generate" else 0,
                        backend=target.backend)
    rows = run_scaling(cfg)
    return next(r for r in rows if r["phase"] == phase)


def predict_e2e_latency(case: Case, target: Target) -> float:
    """Prefill of the prompt plus ``output_tokens - 1`` decode steps, in the case's time unit."""
    return _scaling_row(case, target, "generate")["latency_ns"] / _TIME_NS[case.unit]


def predict_output_tokens_per_s(case: Case, target: Target) -> float:
    """Generated tokens over the whole request's time, prefill included (tok/s)."""
    return case.output_tokens * 1e9 / _scaling_row(case, target, "generate")["latency_ns"]


def predict_ttft(case: Case, target: Target) -> float:
    """The prefill of the prompt (it yields the first token), in the case's time unit."""
    return _scaling_row(case, target, "prefill")["latency_ns"] / _TIME_NS[case.unit]


def predict_tokens_per_s_per_user(case: Case, target: Target) -> float:
    """Tokens one sequence advances per second in a decode step (or speculative iteration) at ``prompt_len``."""
    return float(_scaling_row(case, target, case.phase)["tokens_per_s_per_user"])


def predict_busbw(case: Case, target: Target) -> float:
    """nccl-tests busbw of one all-reduce of ``size_bytes`` on sockets 0..tp-1 (GB/s)."""
    from sn40l_emu.cluster.session import Backend, open_node
    from sn40l_emu.config import load_profile
    from sn40l_emu.experiments.allreduce_bench import BenchConfig, run_bench
    from sn40l_emu.program import Algo

    try:
        algo = Algo(case.algo)
    except ValueError:
        raise ConfigError(f"{case.id}.algo", case.algo, ", ".join(a.value for a in Algo)) from None
    profile = load_profile(target.profile, _overrides(case, target))
    cfg = BenchConfig(min_bytes=case.size_bytes, max_bytes=case.size_bytes, algo=algo, sockets=case.tp,
                      check=False, timing_only=True, iters=1, warmup=0)
    with open_node(profile, backend=Backend(target.backend), trace=False) as node:
        rows = list(run_bench(node, cfg))
    return float(rows[0].busbw_gbps)


PREDICTORS: dict[str, Callable[[Case, Target], float]] = {
    "e2e_latency": predict_e2e_latency,
    "output_tokens_per_s": predict_output_tokens_per_s,
    "ttft": predict_ttft,
    "tokens_per_s_per_user": predict_tokens_per_s_per_user,
    "busbw": predict_busbw,
}


def profile_for(platform: str, profile_dir: str | Path | None) -> str:
    """``profile_dir/<platform>.yaml`` when it exists, else the shipped profile of that name."""
    if profile_dir:
        p = Path(profile_dir) / f"{platform}.yaml"
        if p.is_file():
            return str(p)
    return platform


def predict(case: Case, target: Target) -> float:
    """The emulator's value for ``case`` in the case's own unit."""
    return PREDICTORS[case.metric](case, target)


def rel_err(got: float, want: float) -> float:
    """Signed relative error ``got / want - 1``."""
    return got / want - 1.0


def summarize(rel_errs: Sequence[float]) -> dict[str, Any]:
    """count, median and worst |relative error|, and how many fall within 10 % and 25 %."""
    errs = sorted(abs(e) for e in rel_errs)
    n = len(errs)
    if n == 0:
        return {"count": 0, "median_abs_rel_err": None, "worst_abs_rel_err": None, "within_10pct": 0,
                "within_25pct": 0}
    mid = n // 2
    median = errs[mid] if n % 2 else (errs[mid - 1] + errs[mid]) / 2
    return {"count": n, "median_abs_rel_err": median, "worst_abs_rel_err": errs[-1],
            "within_10pct": sum(e <= 0.10 for e in errs), "within_25pct": sum(e <= 0.25 for e in errs)}
