"""Programs that repeat exactly since a power-cycle: answered on the driver, run on the actors later.

Why: a sweep power-cycles the node before every row and every seed, and each
seed of a row starts with the same composition load (and, when the draw picks
the same experts, the same expert switch) from the same fresh sockets. On Ray
every such program cost one actor call per socket (about 15-40 ms of wall and
8 actors' CPU on a 2-core host) to learn what the first seed already learnt.

Why it is exact: a socket's state after a power-cycle is a function of what it
did since: the programs it ran, each from its start clock with its links busy
as they were. So the same programs on the same history, each starting at the
same clock with the same links busy, give the same results. The book numbers
histories (one small int per distinct history since a power-cycle, as
``node.Versions`` numbers timing states) and keeps each step's results under
the history it leads to. A repeat is answered from the book without a call;
its programs are *deferred*: handed to the actors with their next call (the
``prelude``), which run them first, in order, each checked to end where its
result said (a divergence raises; it would be a bug). A power-cycle before
that drops them unrun: nothing they did can be seen any more.

Only programs without collectives or functional kernels are answered so (a
program that talks to its peers, or computes real numbers, runs in its step),
and only they extend a history: any other step leaves it unknown. Anything
the book cannot follow (an injected change, a fault, a recovery,
tensors loaded, a segment allocated from outside a program) makes the history
unknown until the next power-cycle, and nothing is answered meanwhile.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace

from sn40l_emu.fabric.network import BusyLinks
from sn40l_emu.program import CollectiveOp, KernelOp, Program
from sn40l_emu.socket_actor.socket_model import ProgramResult


@dataclass(frozen=True)
class Deferred:
    """A program answered from the book, still to run on its socket (in this order)."""

    program: Program
    start_ns: int  # the clock the node had moved the socket to (0: none)
    reset: bool  # the node's power-cycle travels with it
    links: BusyLinks  # links the node kept busy meanwhile
    end_ns: int  # where it ended when it ran for real


def deferrable(program: Program) -> bool:
    """Memory, DMA and timing kernels only: it talks to no peer and computes no numbers."""
    return not any(isinstance(op, CollectiveOp) or (isinstance(op, KernelOp) and op.fn is not None)
                   for op in program.ops)


def _copy(r: ProgramResult) -> ProgramResult:
    """A result handed out again: its own containers, so that no caller shares them."""
    return replace(r, breakdown_ns=dict(r.breakdown_ns), kernel_ns=list(r.kernel_ns), events=list(r.events))


class ReplayBook:
    """The node's histories since its last power-cycle, each step's results, and what is deferred."""

    def __init__(self, max_histories: int = 20_000) -> None:
        self.max_histories = max_histories
        self._ids: dict[tuple[int, Hashable], int] = {}
        self._results: dict[int, dict[int, ProgramResult]] = {}
        self._count = itertools.count(1)
        self.history: int | None = None  # None: the sockets' state is not known here
        self.deferred: dict[int, list[Deferred]] = {}
        self.answered = 0  # steps answered without an actor call

    def power_cycle(self, root: Hashable) -> None:
        """Every socket fresh; ``root`` names what a fresh node depends on (trace settings)."""
        self.deferred = {}
        self.history = self._id(0, ("power-cycle", root))

    def forget(self) -> None:
        """The sockets changed in a way not followed here: answer nothing until a power-cycle."""
        self.history = None

    def clear(self) -> None:
        """A new profile: every history and result goes (nothing deferred may be left)."""
        self._ids.clear()
        self._results.clear()
        self.deferred = {}
        self.history = None

    @staticmethod
    def step(programs: Mapping[int, Program], pending: Mapping[int, int],
             links: Mapping[int, BusyLinks]) -> tuple[tuple[int, Program, int, BusyLinks], ...]:
        """What a step is, for the book: per socket its program, start clock and busy links."""
        return tuple((s, programs[s], pending.get(s, 0), links.get(s, ())) for s in sorted(programs))

    def lookup(self, step: Hashable) -> dict[int, ProgramResult] | None:
        """The step's results when it ran before on this very history (copies), else None."""
        if self.history is None:
            return None
        hid = self._ids.get((self.history, step))
        hit = None if hid is None else self._results.get(hid)
        if hit is None:
            return None
        self.history = hid
        self.answered += 1
        return {s: _copy(r) for s, r in hit.items()}

    def defer(self, socket: int, item: Deferred) -> None:
        self.deferred.setdefault(socket, []).append(item)

    def take(self, socket: int) -> list[Deferred]:
        """The socket's deferred programs, to run before anything else it is asked (in order)."""
        return self.deferred.pop(socket, [])

    def record(self, step: Hashable, results: Mapping[int, ProgramResult]) -> None:
        """A step of deferrable programs ran for real on the current history: keep its results."""
        if self.history is None:
            return
        hid = self._id(self.history, step)
        self._results[hid] = {s: _copy(r) for s, r in results.items()}
        self.history = hid

    def _id(self, parent: int, step: Hashable) -> int:
        key = (parent, step)
        hid = self._ids.get(key)
        if hid is None:
            if len(self._ids) >= self.max_histories:  # bounded: start again (ids are never reused)
                self._ids.clear()
                self._results.clear()
            hid = self._ids[key] = next(self._count)
        return hid
