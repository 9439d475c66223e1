"""Which program a socket holds, and what switching to another costs (Program / Argument Load).

On the SN40L a socket runs one compiled program at a time; the host runtime
loads it (Program Load: the configuration of every PCU and PMU) and then its
arguments (Argument Load: the addresses of the weights and the KV cache it
works on). The knobs are ``runtime.program_load_us`` and
``runtime.argument_load_us`` (``workload/host_runtime.py``; both 0 on a DGX,
where kernels are resident and arguments travel with each launch).

What counts as a program in a composition (a modelling decision, stated so it
can be checked):

* the **router** program: its prefill over the batch's prompts, then the
  expert-choice head (:mod:`sn40l_emu.coe.router`);
* the **expert prefill** program and the **expert decode** program. Every
  expert of a composition has the same architecture (``CoESetup.model``), so
  two experts run the *same* compiled prefill (or decode) program over
  different weights. The prompt length and the context length are arguments
  of that program, not part of it (one decode program serves every step).

A switch from ``prev`` to ``nxt`` on a socket costs:

* **Program Load + Argument Load** when the program changes: nothing loaded
  yet, router -> expert, expert -> router, prefill -> decode, decode ->
  prefill (the next request, whichever expert it runs);
* **Argument Load alone** when the program stays and only the weight
  addresses change: an expert's prefill followed by another expert's prefill
  (one-token requests), i.e. the same program pointed at other weights;
* **nothing** when program and weights both stay (the next decode step, or a
  one-token request after a one-token request on the same expert).

Every socket of the TP group loads its own program over its own host link at
the same time, so a switch delays every socket by the same amount: it adds
exactly its closed form to the batch (the shift argument of engine/reuse.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.config import NodeProfile
from sn40l_emu.workload.host_runtime import HostTime

ROUTER_WEIGHTS = -1  # the router's weights (experts are 0..N-1)


@dataclass(frozen=True)
class Loaded:
    """The program a socket holds: ``program`` names the compiled program, ``weights`` its weights."""

    program: str  # "router", "expert prefill" or "expert decode"
    weights: int  # ROUTER_WEIGHTS or an expert id


ROUTER = Loaded("router", ROUTER_WEIGHTS)


def expert_prefill(expert: int) -> Loaded:
    return Loaded("expert prefill", expert)


def expert_decode(expert: int) -> Loaded:
    return Loaded("expert decode", expert)


@dataclass(frozen=True)
class SwitchCosts:
    """The two host-runtime knobs a switch costs (ns), as ``workload/host_runtime.switch_ns`` reads them."""

    program_load_ns: int
    argument_load_ns: int

    @staticmethod
    def of(profile: NodeProfile) -> SwitchCosts:
        return SwitchCosts(profile.runtime.program_load_ns, profile.runtime.argument_load_ns)


def switch_time(costs: SwitchCosts, prev: Loaded | None, nxt: Loaded) -> HostTime:
    """The host time of switching a socket from ``prev`` (None: nothing loaded) to ``nxt``."""
    if prev is None or prev.program != nxt.program:
        return HostTime((("program_load", costs.program_load_ns), ("argument_load", costs.argument_load_ns)))
    if prev.weights != nxt.weights:
        return HostTime((("argument_load", costs.argument_load_ns),))
    return HostTime()


def request_switches(costs: SwitchCosts, prev: Loaded | None, expert: int,
                     output_tokens: int) -> tuple[HostTime, HostTime, Loaded]:
    """The switches one (prompt, expert) pair makes: (into its prefill, prefill -> decode, held after).

    The prefill program (from ``prev``), then, when there is more than one
    output token, the decode program: the decode steps themselves switch nothing.
    """
    prefill = expert_prefill(expert)
    into = switch_time(costs, prev, prefill)
    if output_tokens <= 1:
        return into, HostTime(), prefill
    decode = expert_decode(expert)
    return into, switch_time(costs, prefill, decode), decode


def load_split(t: HostTime) -> tuple[int, int]:
    """(Program Load ns, Argument Load ns) of a switch's host time."""
    by = t.by_name()
    return by.get("program_load", 0), by.get("argument_load", 0)
