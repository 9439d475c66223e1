"""The Ray session's frozen driver heap is thawed on exit, and a caller's own freeze is left alone."""

from __future__ import annotations

import gc

import pytest

from sn40l_emu.cluster.session import _ray_heap_frozen


def test_the_heap_is_frozen_inside_and_thawed_after() -> None:
    gc.unfreeze()
    with _ray_heap_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_callers_freeze_survives_the_session() -> None:
    gc.unfreeze()
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with pytest.raises(RuntimeError), _ray_heap_frozen():
            raise RuntimeError("the run failed")
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
