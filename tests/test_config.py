"""Tier 1: node profiles load, carry sources, and reject bad input with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sn40l_emu import units
from sn40l_emu.config import Platform, load_profile, load_raw, shipped_profiles
from sn40l_emu.errors import ConfigError


def test_shipped_profiles_listed() -> None:
    assert shipped_profiles() == ["dgx-a100", "dgx-h100", "sn40l"]


def test_sn40l_figures_in_base_units() -> None:
    p = load_profile("sn40l")
    assert p.socket.hbm_bytes == 64 * units.GiB
    assert p.socket.ddr_bytes == int(1.5 * units.TiB)
    assert p.socket.peak_flops_per_s == 638 * 10**12
    assert p.socket.hbm_bw_bytes_per_s == 1_800_000_000_000
    assert p.socket.ddr_bw_bytes_per_s == 200 * units.GB
    assert p.socket.compute_units == 1040 and p.socket.memory_units == 1040
    assert p.socket.sram_bytes == 520 * units.MiB
    assert p.p2p.link_bw_bytes_per_s == 50 * units.GB and p.p2p.link_latency_ns == 1000
    assert p.platform is Platform.SN40L and p.sockets == 8


@pytest.mark.parametrize("name", ["sn40l", "dgx-a100", "dgx-h100"])
def test_every_shipped_leaf_has_a_source(name: str) -> None:
    raw = load_raw(name)
    for section, fields in raw.items():
        if not isinstance(fields, dict):
            continue
        for key, leaf in fields.items():
            assert isinstance(leaf, dict) and leaf.get("source"), f"{name}: {section}.{key} has no source"
    p = load_profile(name)
    assert all(src for _, src in p.sources)


def test_knobs_marked() -> None:
    p = load_profile("sn40l")
    assert "p2p.link_bw_gbps" in p.knobs and "launch.so_call_us" in p.knobs
    assert "socket.hbm_gib" not in p.knobs


def test_override_changes_value_and_source() -> None:
    p = load_profile("sn40l", ["p2p.link_bw_gbps=25", "socket.hbm_gib=32 GiB"])
    assert p.p2p.link_bw_bytes_per_s == 25 * units.GB
    assert p.socket.hbm_bytes == 32 * units.GiB
    assert "override" in p.source_of("p2p.link_bw_gbps")


@pytest.mark.parametrize(("override", "field"), [
    ("p2p.link_bw_gbps=0", "p2p.link_bw_gbps"),
    ("p2p.link_bw_gbps=-5", "p2p.link_bw_gbps"),
    ("socket.hbm_gib=lots", "socket.hbm_gib"),
    ("socket.hbm_gib=12 parsecs", "socket.hbm_gib"),
    ("socket.pcus=3.5", "socket.pcus"),
    ("socket.nope=1", "socket.nope"),
    ("p2p.topology=hypercube", "p2p.topology"),
    ("tile.hbm_stream_efficiency=1.5", "tile.hbm_stream_efficiency"),
    ("nosection.x=1", "nosection.x"),
])
def test_bad_override_names_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("sn40l", [override])
    assert err.value.field == field
    assert "allowed" in str(err.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(ConfigError, match="sn40l"):
        load_profile("no-such-profile")


def test_user_profile_extends_and_missing_field(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"extends": "sn40l", "name": "mine", "p2p": {"link_bw_gbps": "100 GB/s"}}))
    p = load_profile(str(f))
    assert p.name == "mine" and p.p2p.link_bw_bytes_per_s == 100 * units.GB
    raw = load_raw("sn40l")
    del raw["socket"]["hbm_gib"]
    g = tmp_path / "broken.yaml"
    g.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_profile(str(g))
    assert err.value.field == "socket.hbm_gib"


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    f = tmp_path / "evil.yaml"
    f.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_profile(str(f))


def test_units_parse() -> None:
    assert units.parse_size_bytes("1G") == units.GiB
    assert units.parse_size_bytes("8") == 8
    assert units.parse_bw_bytes_per_s("1.8 TB/s") == 1_800_000_000_000
    assert units.parse_time_ns("5ms") == 5_000_000
    assert units.transfer_ns(units.GiB, 125 * units.GB) == -(-units.GiB * 10**9 // (125 * 10**9))
    with pytest.raises(ValueError):
        units.parse_size_bytes("3 furlongs")


@pytest.mark.parametrize("name", shipped_profiles())
def test_profile_show_json_loads_back_as_the_same_profile(tmp_path: Path, name: str) -> None:
    """``profile show --json`` renamed keys (pcus -> compute_units) and could not be loaded back."""
    p = load_profile(name, ["p2p.link_bw_gbps=12.5", "launch.ho_kernel_us=0.5"])
    f = tmp_path / "saved.json"
    f.write_text(json.dumps(p.to_json(), indent=2))
    again = load_profile(str(f))
    assert again == p
    assert again.to_json() == p.to_json()
    assert p.to_json()["socket"]["pcus"]["value"] == p.socket.compute_units


@pytest.mark.slow
def test_profile_show_json_round_trip_through_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", *args], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    saved = tmp_path / "mine.json"
    saved.write_text(cli("profile", "show", "sn40l", "--set", "p2p.link_bw_gbps=25", "--json"))
    assert json.loads(cli("profile", "show", str(saved), "--json")) == json.loads(saved.read_text())


def test_zero_quantities_shown_in_the_unit_of_their_key() -> None:
    """``launch.ho_kernel_us`` (0) was shown as "0 ns"."""
    from sn40l_emu.report import profile_table

    row = next(line for line in profile_table(load_profile("sn40l")).splitlines() if "ho_kernel_us" in line)
    assert " 0 us " in row
