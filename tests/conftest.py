"""Shared fixtures. Ray is started once per session, bound to 127.0.0.1, and only
shut down through ``ray.shutdown()`` (never ``ray stop``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray fixes its auth mode when it is first imported; a test module that imports ray at
# collection time must already see token mode, or the session's Ray refuses this driver.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Commands run by the tests write their default run directories (runs/...) here, not into the checkout.
if "SN40L_EMU_RUNS_DIR" not in os.environ:
    import tempfile

    os.environ["SN40L_EMU_RUNS_DIR"] = os.path.join(tempfile.mkdtemp(prefix="sn40l-emu-test-runs-"), "runs")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray for the whole test session (tier 2 tests)."""
    from sn40l_emu.cluster.bringup import start_local_ray

    handle = start_local_ray(num_cpus=4)
    try:
        yield None
    finally:
        handle.shutdown()
