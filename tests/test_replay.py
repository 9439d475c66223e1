"""The replay book: repeats since a power-cycle are recognised only on the very same history."""

from __future__ import annotations

from sn40l_emu.cluster.replay import ReplayBook, deferrable
from sn40l_emu.program import AllocOp, CollectiveKind, CollectiveOp, Program, Tier
from sn40l_emu.socket_actor.socket_model import ProgramResult

LOAD = Program.of("load", [AllocOp("e0", Tier.DDR, 1 << 20)])
SWITCH = Program.of("switch", [AllocOp("e0@hbm", Tier.HBM, 1 << 20)])


def _results(end_ns: int) -> dict[int, ProgramResult]:
    return {s: ProgramResult(s, "x", 0, end_ns, {"copies": end_ns}) for s in range(2)}


def test_a_step_is_answered_only_after_the_same_history() -> None:
    book = ReplayBook()
    assert book.lookup(book.step({0: LOAD, 1: LOAD}, {}, {})) is None  # nothing known before a power-cycle
    book.power_cycle(("marks", True))
    load = book.step({0: LOAD, 1: LOAD}, {}, {})
    assert book.lookup(load) is None
    book.record(load, _results(10))
    switch = book.step({0: SWITCH, 1: SWITCH}, {0: 50, 1: 50}, {})
    book.record(switch, _results(70))

    book.power_cycle(("marks", True))
    assert book.lookup(book.step({0: SWITCH, 1: SWITCH}, {0: 50, 1: 50}, {})) is None  # not after a load
    book.power_cycle(("marks", True))
    got = book.lookup(book.step({0: Program.of("load", [AllocOp("e0", Tier.DDR, 1 << 20)]), 1: LOAD}, {}, {}))
    assert got is not None and got[0].end_ns == 10  # an equal program is the same program
    assert book.lookup(book.step({0: SWITCH, 1: SWITCH}, {0: 51, 1: 50}, {})) is None  # another start clock
    book.power_cycle(("marks", True))
    book.lookup(load)
    again = book.lookup(switch)
    assert again is not None and again[1].end_ns == 70 and book.answered == 3
    again[1].breakdown_ns["copies"] = 0  # a caller's change does not reach the book
    book.power_cycle(("marks", True))
    book.lookup(load)
    assert book.lookup(switch)[1].breakdown_ns == {"copies": 70}  # type: ignore[index]


def test_the_unknown_and_a_different_fresh_node_answer_nothing() -> None:
    book = ReplayBook()
    book.power_cycle(("marks", True))
    load = book.step({0: LOAD, 1: LOAD}, {}, {})
    book.record(load, _results(10))
    book.power_cycle(("marks", False))  # traces differ
    assert book.lookup(load) is None
    book.power_cycle(("marks", True))
    book.forget()  # e.g. an injected change
    assert book.lookup(load) is None
    book.power_cycle(("marks", True))
    book.clear()  # a new profile
    book.power_cycle(("marks", True))
    assert book.lookup(load) is None


def test_only_programs_that_talk_to_no_peer_are_deferrable() -> None:
    op = CollectiveOp("ar", CollectiveKind.ALL_REDUCE, (0, 1), (16,), "float32")
    assert deferrable(LOAD) and not deferrable(Program.of("ar", [op]))
