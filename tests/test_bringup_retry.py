"""A local Ray whose raylet is slow to register (a loaded machine) is started again, not reported as a failure."""

from __future__ import annotations

from typing import Any

import pytest


def test_start_local_ray_retries_a_slow_raylet(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from sn40l_emu.cluster import bringup

    calls: list[dict[str, Any]] = []

    def fake_init(**kw: Any) -> None:
        calls.append(kw)
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    handle = bringup.start_local_ray(num_cpus=1)
    assert len(calls) == 2 and calls[0]["_temp_dir"] != calls[1]["_temp_dir"]
    assert handle.temp_dir == calls[1]["_temp_dir"]
    handle.shutdown()


def test_start_local_ray_gives_up_on_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from sn40l_emu.cluster import bringup

    calls: list[int] = []

    def fake_init(**kw: Any) -> None:
        calls.append(1)
        raise ValueError("bad argument")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(ValueError, match="bad argument"):
        bringup.start_local_ray(num_cpus=1)
    assert calls == [1]
