"""The CoE router as its own program, and the host's Program / Argument Load at program switches.

Exact nanoseconds from the closed forms of coe/program_switch.py; the routing
decision against a single-process numpy reference of the router.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.coe.coordinator import BatchResult, CoECoordinator, CoESetup
from sn40l_emu.coe.program_switch import (
    ROUTER,
    SwitchCosts,
    expert_decode,
    expert_prefill,
    request_switches,
    switch_time,
)
from sn40l_emu.coe.router import RouterPrograms
from sn40l_emu.coe.weight_store import WeightStore
from sn40l_emu.coe.workload import Request, batches, parse_workload, prompt_token_ids
from sn40l_emu.config import load_profile
from sn40l_emu.engine.program_book import ProgramBook
from sn40l_emu.workload import ExecMode, Step, load_model, make_plan
from sn40l_emu.workload.reference import make_weights
from sn40l_emu.workload.router_head import make_route_head, reference_expert_logits

TINY = load_model("tiny-llama")
PL, AL = 270_000, 2_000  # sn40l.yaml: runtime.program_load_us = 270, argument_load_us = 2
NO_LOADS = ("runtime.program_load_us=0", "runtime.argument_load_us=0")


# ---- the rule (pure) ---------------------------------------------------------
def test_switch_rule_closed_form() -> None:
    c = SwitchCosts(PL, AL)
    both = {"program_load": PL, "argument_load": AL}
    assert switch_time(c, None, ROUTER).by_name() == both
    assert switch_time(c, ROUTER, expert_prefill(3)).by_name() == both
    assert switch_time(c, expert_prefill(3), expert_decode(3)).by_name() == both
    assert switch_time(c, expert_decode(3), expert_prefill(3)).by_name() == both  # the next request
    assert switch_time(c, expert_decode(3), ROUTER).by_name() == both
    assert switch_time(c, expert_prefill(3), expert_prefill(5)).by_name() == {"argument_load": AL}
    assert switch_time(c, expert_prefill(3), expert_prefill(3)).total_ns == 0
    into, to_decode, held = request_switches(c, ROUTER, 2, 5)
    assert (into.total_ns, to_decode.total_ns, held) == (PL + AL, PL + AL, expert_decode(2))
    into, to_decode, held = request_switches(c, expert_prefill(1), 2, 1)
    assert (into.total_ns, to_decode.total_ns, held) == (AL, 0, expert_prefill(2))


def test_profiles_carry_the_knobs() -> None:
    assert SwitchCosts.of(load_profile("sn40l")) == SwitchCosts(PL, AL)
    assert SwitchCosts.of(load_profile("dgx-h100")) == SwitchCosts(0, 0)


# ---- the router program ------------------------------------------------------
def test_router_program_is_the_prefill_then_the_expert_head() -> None:
    plan = make_plan(TINY, 8, tuple(range(8)))
    book = ProgramBook()
    ops = RouterPrograms(TINY, plan, ExecMode.FUSED_HO, 4, book).group(2, 5)[0].ops
    prefill = book.group(TINY, plan, Step.prefill(2, 5), ExecMode.FUSED_HO)[0].ops
    names = [getattr(op, "name", "") for op in ops]
    assert names[-1] == "router.expert_head"
    assert not [n for n in names if n.startswith(("lm_head", "logits_allgather"))]  # no vocab logits
    assert ops[:-1] == prefill[:len(ops) - 1]
    h = TINY.hidden_size
    assert ops[-1].flops == 2 * 5 * h + 4 * 2 * h + 2 * 2 * h * 4  # type: ignore[union-attr]


# ---- Program / Argument Load in the coordinator ---------------------------------
def _batch(overrides: tuple[str, ...], reqs: list[Request], profile: str = "sn40l") -> BatchResult:
    """One batch on a two-socket node (TP2: the loads do not depend on the TP width; it keeps this fast)."""
    node = LocalNode(load_profile(profile, ["node.sockets=2", *overrides]))
    coord = CoECoordinator(node, CoESetup(TINY, 4, len(reqs), 4, max(r.output_tokens for r in reqs)))
    coord.load()
    return coord.run_batch(reqs)


def test_program_switches_add_program_and_argument_load_exactly() -> None:
    reqs = [Request(0, 1, 4, 3), Request(1, 2, 4, 3)]
    res, base = _batch((), reqs), _batch(NO_LOADS, reqs)
    # into the router, then per request: into its prefill, prefill -> decode
    assert (res.program_load_ns, res.argument_load_ns) == (5 * PL, 5 * AL)
    assert (base.program_load_ns, base.argument_load_ns) == (0, 0)
    assert res.total_ns - base.total_ns == 5 * (PL + AL)
    assert (res.router_ns, res.switch_ns, res.expert_ns) == (base.router_ns, base.switch_ns, base.expert_ns)
    assert res.total_ns == (res.router_ns + res.switch_ns + res.program_load_ns + res.argument_load_ns
                            + res.host_ns + res.expert_ns)
    assert [r.load_ns for r in res.requests] == [2 * (PL + AL)] * 2
    host = [e for e in res.events if e.track == "host" and e.name.split(" ")[0] in ("program_load", "argument_load")]
    assert sorted(e.name.split(" ")[0] for e in host) == ["argument_load"] * 5 + ["program_load"] * 5
    assert sum(e.dur_ns for e in host) == 5 * (PL + AL)


def test_argument_load_alone_when_only_the_weights_change() -> None:
    # one-token requests: prefill programs back to back; expert 1 -> 2 changes only the weights
    reqs = [Request(0, 1, 4, 1), Request(1, 2, 4, 1), Request(2, 2, 4, 1)]
    res, base = _batch((), reqs), _batch(NO_LOADS, reqs)
    assert (res.program_load_ns, res.argument_load_ns) == (2 * PL, 3 * AL)
    assert [r.load_ns for r in res.requests] == [PL + AL, AL, 0]
    assert res.total_ns - base.total_ns == 2 * PL + 3 * AL


def test_gpu_loads_nothing() -> None:
    reqs = [Request(0, 1, 4, 2)]
    res = _batch((), reqs, "dgx-h100")
    assert (res.program_load_ns, res.argument_load_ns) == (0, 0)
    assert not [e for e in res.events if e.track == "host" and e.name.startswith(("program_load", "argument_load"))]


# ---- functional mode: the router decides -------------------------------------------
def _trace(tmp_path: Path, prompts: list[str]) -> str:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": t, "expert": 0, "prompt_len": 5, "output_tokens": 1}) + "\n"
                         for t in prompts))
    return str(p)


def _reference_route(prompt: Request, n: int, seed: int) -> int:
    """The router on one process: the decoder stack, mean pool, final norm, head, argmax."""
    logits = reference_expert_logits(TINY, make_weights(TINY, seed + n), make_route_head(TINY, n, seed + n),
                                     prompt_token_ids(prompt, TINY.vocab_size))
    return int(np.argmax(logits[0]))


@pytest.mark.slow
def test_functional_router_picks_the_expert_from_the_prompt(tmp_path: Path) -> None:
    n, seed = 4, 7
    store = WeightStore(tmp_path / "store")
    coord = CoECoordinator(LocalNode(load_profile("sn40l")), CoESetup(TINY, n, 4, 5, 1), store=store)
    store.write_composition(TINY, coord.plan, n, seed)
    coord.load()
    prompts = ["a", "b", "c", "d", "e", "f", "a", "c"]
    spec = parse_workload(_trace(tmp_path, prompts))
    routed: list[tuple[Request, int]] = []
    for b in batches(spec, n, 4, None, 5, 1, 0):
        res = coord.run_batch(b)
        routed += [(req, rr.expert) for req, rr in zip(b, res.requests, strict=True)]
    by_prompt = {req.prompt: e for req, e in routed}
    assert len(set(by_prompt.values())) >= 2  # the routed expert changes with the prompt
    assert [e for _, e in routed] == [by_prompt[p] for p in prompts]  # same prompt, same expert
    for req, e in routed:
        assert e == _reference_route(req, n, seed), f"prompt {req.prompt!r}"
