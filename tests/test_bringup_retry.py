"""A local Ray whose raylet is slow to register (a loaded machine) is started again, not reported as a failure."""

from __future__ import annotations

from typing import Any

import pytest


class _FakeNode:
    address = "127.0.0.1:1"

    def __init__(self) -> None:
        self.killed = False

    def kill_all_processes(self, **kw: Any) -> None:
        self.killed = True


def test_start_local_ray_retries_a_slow_raylet(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from sn40l_emu.cluster import bringup

    dirs: list[str] = []
    inits: list[dict[str, Any]] = []
    node = _FakeNode()

    def fake_head(temp_dir: str, num_cpus: int, sockets: int) -> _FakeNode:
        dirs.append(temp_dir)
        if len(dirs) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")
        return node

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(bringup, "_start_head", fake_head)
    monkeypatch.setattr(ray, "init", lambda **kw: inits.append(kw))
    handle = bringup.start_local_ray(num_cpus=1)
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    assert handle.temp_dir == dirs[1] and handle.node is node
    assert [kw["address"] for kw in inits] == [node.address]
    handle.shutdown()
    assert node.killed and handle.node is None


def test_start_local_ray_gives_up_on_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from sn40l_emu.cluster import bringup

    calls: list[int] = []

    def fake_head(temp_dir: str, num_cpus: int, sockets: int) -> None:
        calls.append(1)
        raise ValueError("bad argument")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(bringup, "_start_head", fake_head)
    with pytest.raises(ValueError, match="bad argument"):
        bringup.start_local_ray(num_cpus=1)
    assert calls == [1]


def test_without_api_server_restores_ray() -> None:
    from ray._private.node import Node

    from sn40l_emu.cluster import bringup

    original = Node.start_api_server
    with bringup.without_api_server():
        assert Node.start_api_server is not original
    assert Node.start_api_server is original


def test_without_api_server_starts_a_ray_without_the_method_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray version with no ``start_api_server``: nothing is patched (it used to raise AttributeError)."""
    from ray._private.node import Node

    from sn40l_emu.cluster import bringup

    monkeypatch.delattr(Node, "start_api_server")
    with bringup.without_api_server():
        assert not hasattr(Node, "start_api_server")
    assert not hasattr(Node, "start_api_server")


def test_lean_head_args_merge_the_lean_settings_with_the_callers() -> None:
    from sn40l_emu.cluster import bringup

    with bringup.lean_head({"num_cpus": 2}, {"health_check_period_ms": 500}) as args:
        assert args == {"num_cpus": 2, **bringup.LEAN_NODE_ARGS,
                        "_system_config": {**bringup.LEAN_SYSTEM_CONFIG, "health_check_period_ms": 500}}
