"""Every bad input found by hand (issue 11, "Bad input") run as a user would run it.

Each case runs ``sn40l-emu`` in a subprocess and asserts what a user must see:
exit status 2, exactly one line on stderr naming the field, and no traceback.
Nothing here needs Ray: profile and scenario errors are raised while reading
the input, before any run starts, and runs use ``--backend local``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_BOMB_LEVELS = 9  # 9 levels of 9 aliases each: 9**9 (387 million) leaves once expanded


def _sn40l_emu(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run([sys.executable, "-m", "sn40l_emu.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _assert_clean_exit_2(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one stderr line starting ``sn40l-emu: error:``, no traceback; returns the line."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-2000:]
    assert len(lines) == 1, r.stderr[-2000:]
    line = lines[0]
    assert line.startswith("sn40l-emu: error: "), line
    assert len(line) < 600, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def alias_bomb(key: str = "events") -> str:
    """A "billion laughs" document: under 500 bytes, 9**9 leaves when walked."""
    parts = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, _BOMB_LEVELS):
        parts.append(f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return f"{key}: [" + ", ".join(parts) + "]\n"


# ---- --set overrides (profile show and capacity) ---------------------------------

@pytest.mark.parametrize(("override", "field"), [
    ("socket.hbm_gib=1e400 GiB", "socket.hbm_gib"),
    ("p2p.link_bw_gbps=1e400 GB/s", "p2p.link_bw_gbps"),
    ("p2p.link_latency_us=1e400 us", "p2p.link_latency_us"),
    ("socket.peak_tflops=1e300", "socket.peak_tflops"),
    ("socket.pcus=" + "9" * 400, "socket.pcus"),
    ("p2p.link_bw_gbps=0.0000000001", "rounds to 0"),
])
@pytest.mark.slow
def test_profile_show_set_refuses(override: str, field: str) -> None:
    """Each raised an OverflowError traceback (or stored 0 B/s) before."""
    line = _assert_clean_exit_2(_sn40l_emu("profile", "show", "sn40l", "--set", override), field)
    assert "9" * 100 not in line  # the bad value is shortened


@pytest.mark.parametrize(("override", "field"), [
    ("p2p.link_bw_gbps=.nan", "p2p.link_bw_gbps"),
    ("p2p.link_bw_gbps=-.inf", "p2p.link_bw_gbps"),
    ("p2p.link_bw_gbps=1.0e400", "p2p.link_bw_gbps"),
    ("socket.hbm_gib=" + "9" * 400, "socket.hbm_gib"),
    ("p2p.link_bw_gbps=" + "[" * 5000, "p2p.link_bw_gbps"),
    ("p2p.link_bw_gbps=[&a 1, *a]", "aliases"),
    ("socket.pcus=8.5", "socket.pcus"),
    ("socket.peak_tflops=5 GB/s", "socket.peak_tflops"),
    ("launch.ho_kernel_us=1e400 us", "launch.ho_kernel_us"),
    ("p2p.timeout_s=1e400", "p2p.timeout_s"),
    ("tile.compute_efficiency=1.5", "tile.compute_efficiency"),
])
def test_set_refuses_in_process(override: str, field: str) -> None:
    """More of the same, in-process (cheaper): a ConfigError with a short one-line message."""
    from sn40l_emu.config import load_profile
    from sn40l_emu.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_profile("sn40l", [override])
    msg = str(info.value)
    assert field in msg and "\n" not in msg and len(msg) < 600, msg


@pytest.mark.slow
def test_capacity_with_hbm_that_rounds_to_zero() -> None:
    """It printed "nodes needed -1" and exited 0."""
    r = _sn40l_emu("capacity", "--set", "socket.hbm_gib=1e-10")
    _assert_clean_exit_2(r, "socket.hbm_gib", "rounds to 0")
    assert "-1" not in r.stdout


def test_unitless_string_is_in_the_fields_unit() -> None:
    """``--set socket.hbm_gib=1e3`` (a YAML string) is 1000 GiB, not 1000 bytes."""
    from sn40l_emu import units
    from sn40l_emu.config import load_profile

    assert load_profile("sn40l", ["socket.hbm_gib=1e3"]).socket.hbm_bytes == 1000 * units.GiB
    assert load_profile("sn40l", ["socket.peak_tflops=638 TFLOP/s"]).socket.peak_flops_per_s == 638 * units.TFLOPS


# ---- profile files ---------------------------------------------------------------

@pytest.mark.parametrize(("body", "needle"), [
    ("extends: sn40l\nsocket: {pcus: " + "9" * 400 + "}\n", "socket.pcus"),
    ("extends: sn40l\nsocket: {peak_tflops: .inf}\n", "socket.peak_tflops"),
    ("extends: sn40l\np2p: {link_bw_gbps: 1.0e-10}\n", "p2p.link_bw_gbps"),
    ("extends: sn40l\nsocket: {hbm_gib: '1e400 GiB'}\n", "socket.hbm_gib"),
    ("extends: sn40l\nname: " + "[" * 5000 + "]" * 5000 + "\n", "nesting"),
    ("extends: sn40l\nname: [unclosed\n", "valid YAML"),
    ("extends: sn40l\nname: " + "9" * 5000 + "\n", "valid YAML"),
])
def test_profile_file_refuses(tmp_path: Path, body: str, needle: str) -> None:
    from sn40l_emu.config import load_profile
    from sn40l_emu.errors import ConfigError

    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_profile(str(f))
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and len(msg) < 600, msg


@pytest.mark.slow
def test_profile_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    """A 400-byte profile of nested aliases ran 54 s and took 2.2 GB; now refused at the first alias."""
    f = tmp_path / "bomb.yaml"
    f.write_text("extends: sn40l\n" + alias_bomb("name"))
    assert f.stat().st_size < 600
    t0 = time.monotonic()  # wall-clock ok: a bound on how long the refusal takes
    r = _sn40l_emu("profile", "show", str(f))
    elapsed_s = time.monotonic() - t0  # wall-clock ok
    _assert_clean_exit_2(r, "aliases")
    assert elapsed_s < 60, elapsed_s  # interpreter start-up on a loaded machine included; it ran 54 s + OOM


@pytest.mark.slow
def test_binary_profile_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bin.yaml"
    f.write_bytes(bytes(range(256)) * 4)
    _assert_clean_exit_2(_sn40l_emu("profile", "show", str(f)), "UTF-8")


# ---- scenario files (inject) -----------------------------------------------------

_WL = "backend: local\nworkload: {kind: coe, experts: 10, batch: 2, tokens: 2, batches: 1}\n"


@pytest.mark.parametrize(("body", "needle"), [
    (_WL + "events:\n  - {at: 0, kind: link_degrade, src: 0, dst: 1, bw_factor: .inf}\n", "bw_factor"),
    (_WL + "events:\n  - {at: 1e400s, kind: link_down, src: 0, dst: 1}\n", ".at"),
    (_WL + "events: " + "[" * 5000 + "]" * 5000 + "\n", "nesting"),
    ("{{{{ not yaml", "valid YAML"),
])
@pytest.mark.slow
def test_scenario_refuses(tmp_path: Path, body: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    _assert_clean_exit_2(_sn40l_emu("inject", str(f), "--backend", "local"), needle)


@pytest.mark.parametrize(("body", "needle"), [
    (_WL + "events:\n  - {at: 0, kind: link_degrade, src: 0, dst: 1, bw_factor: .nan}\n", "bw_factor"),
    (_WL + "events:\n  - {at: 0, kind: link_degrade, src: 0, dst: 1, bw_factor: 1.0e7}\n", "bw_factor"),
    (_WL + "events:\n  - {at: " + "9" * 400 + ", kind: link_down, src: 0, dst: 1}\n", ".at"),
    (_WL + "events:\n  - {at: -5ms, kind: link_down, src: 0, dst: 1}\n", ".at"),
    (_WL + "events:\n  - {at: 1.5, kind: link_down, src: 0, dst: 1}\n", ".at"),
    (_WL + "events:\n  - {at: 1ms, kind: straggler, socket: 1, compute_factor: 1.0e400}\n", "compute_factor"),
    (_WL + "events:\n  - {at: 1ms, kind: link_degrade, src: 0, dst: 1, extra_latency: 1e400us}\n",
     "extra_latency"),
    (_WL + "events:\n  - {after_requests: " + "9" * 40 + ", kind: link_down, src: 0, dst: 1}\n",
     "after_requests"),
])
def test_scenario_refuses_in_process(tmp_path: Path, body: str, needle: str) -> None:
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.inject.scenario import load_scenario

    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_scenario(f)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and len(msg) < 600, msg


@pytest.mark.slow
def test_scenario_alias_bomb_is_refused_within_5_s(tmp_path: Path) -> None:
    """A 487-byte scenario of nested aliases ran 42 s and took 3 GB; the refusal takes well under 5 s."""
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.inject.scenario import load_scenario

    f = tmp_path / "bomb.yaml"
    f.write_text(alias_bomb())
    assert f.stat().st_size < 500
    t0 = time.monotonic()  # wall-clock ok: the bound, measured in-process
    with pytest.raises(ConfigError, match="aliases"):
        load_scenario(f)
    assert time.monotonic() - t0 < 5  # wall-clock ok
    _assert_clean_exit_2(_sn40l_emu("inject", str(f), "--backend", "local"), "aliases")


@pytest.mark.slow
def test_inject_etc_passwd_does_not_print_the_file() -> None:
    r = _sn40l_emu("inject", "/etc/passwd", "--backend", "local")
    line = _assert_clean_exit_2(r, "/etc/passwd", "mapping")
    assert "root:" not in line and "nologin" not in line and "root:" not in r.stdout


@pytest.mark.slow
def test_inject_binary_file(tmp_path: Path) -> None:
    f = tmp_path / "bin.yaml"
    f.write_bytes(bytes(range(256)) * 4)
    _assert_clean_exit_2(_sn40l_emu("inject", str(f), "--backend", "local"), "UTF-8")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.inject.scenario import load_scenario

    f = tmp_path / "big.yaml"
    f.write_text("# padding\n" * 40_000)
    with pytest.raises(ConfigError, match="at most"):
        load_scenario(f)


def test_a_400_digit_factor_in_a_scenario_is_a_config_error(tmp_path: Path) -> None:
    """Found by the scenario fuzzer: float() of a huge int overflowed before the range check."""
    from sn40l_emu.errors import ConfigError
    from sn40l_emu.inject.scenario import load_scenario

    f = tmp_path / "huge.yaml"
    f.write_text("profile: sn40l\nworkload: {kind: allreduce}\nevents:\n"
                 f"  - {{kind: link_degrade, at: 0, src: 0, dst: 1, bw_factor: {'9' * 400}}}\n")
    with pytest.raises(ConfigError, match="bw_factor"):
        load_scenario(f)
