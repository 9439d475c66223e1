"""The CoE coordinator on a node (LocalNode: the socket models in-process; one Ray run).

Tiny models keep it fast; every expected number is derived from the profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sn40l_emu import units
from sn40l_emu.cluster.node import LocalNode
from sn40l_emu.coe.capacity import expert_shard_bytes
from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
from sn40l_emu.coe.weight_store import WeightStore
from sn40l_emu.coe.workload import batches, parse_workload, prompt_token_ids
from sn40l_emu.config import load_profile
from sn40l_emu.errors import OutOfMemory
from sn40l_emu.experiments.coe_sweep import SweepConfig, run_sweep
from sn40l_emu.program import Tier
from sn40l_emu.workload import load_model
from sn40l_emu.workload.reference import ReferenceModel, make_weights
from sn40l_emu.workload.router_head import make_route_head, reference_expert_logits

# CoE batches of full-size experts on a node: the slow tier
pytestmark = pytest.mark.slow

TINY = load_model("tiny-llama")


def _trace(tmp_path: Path, experts: list[int], tokens: int = 2, prompt_len: int = 4) -> str:
    p = tmp_path / "trace.jsonl"
    p.write_text("".join(json.dumps({"prompt": i, "expert": e, "prompt_len": prompt_len,
                                     "output_tokens": tokens}) + "\n" for i, e in enumerate(experts)))
    return str(p)


def _run(profile_name: str, n: int, experts: list[int], batch: int, tmp_path: Path,
         overrides: tuple[str, ...] = ()) -> tuple[CoECoordinator, list]:
    prof = load_profile(profile_name, list(overrides))
    node = LocalNode(prof)
    coord = CoECoordinator(node, CoESetup(TINY, n, batch, 4, 2))
    coord.load()
    spec = parse_workload(_trace(tmp_path, experts))
    out = [coord.run_batch(b) for b in batches(spec, n, batch, None, 4, 2, 0)]
    return coord, out


def test_sn40l_switch_is_shard_over_ddr_to_hbm_rate(tmp_path: Path) -> None:
    coord, (res,) = _run("sn40l", 4, [2], 1, tmp_path)
    prof = coord.profile
    shard = expert_shard_bytes(prof, TINY.weight_bytes)
    assert res.misses == 1 and res.hits == 0
    assert res.switch_ns == units.transfer_ns(shard, prof.dma.ddr_hbm_bw_bytes_per_s)
    assert res.total_ns == (res.router_ns + res.switch_ns + res.program_load_ns + res.argument_load_ns
                            + res.host_ns + res.expert_ns)


def test_dgx_switch_is_expert_size_over_host_link(tmp_path: Path) -> None:
    # shrink HBM so the tiny composition lives in host DRAM (HBM holds one expert)
    coord, (res,) = _run("dgx-a100", 4, [3], 1, tmp_path, ("socket.hbm_gib=0.00012",))
    assert not coord.all_in_hbm
    prof = coord.profile
    shard = expert_shard_bytes(prof, TINY.weight_bytes)
    per_gpu = prof.host.link_bw_bytes_per_s * prof.host.links // prof.sockets  # 32 GB/s shared by 8
    assert res.switch_ns == units.transfer_ns(shard, per_gpu) + prof.host.link_latency_ns
    # i.e. the whole expert over the node's 32 GB/s host link (to the rounding of 8 shards)
    assert abs(res.switch_ns - prof.host.link_latency_ns - TINY.weight_bytes * 1e9 / 32e9) < 8


def test_dgx_composition_in_hbm_never_switches(tmp_path: Path) -> None:
    coord, (res,) = _run("dgx-h100", 4, [0, 1, 2, 3], 4, tmp_path)
    assert coord.all_in_hbm and res.switch_ns == 0 and res.hits == 4


def test_batch_of_eight_distinct_experts_copies_eight(tmp_path: Path) -> None:
    coord, (res,) = _run("sn40l", 10, list(range(8)), 8, tmp_path)
    shard = expert_shard_bytes(coord.profile, TINY.weight_bytes)
    assert res.misses == 8
    # one DDR->HBM engine per socket: the eight copies queue (FIFO), all sockets in parallel
    assert res.switch_ns == 8 * units.transfer_ns(shard, coord.profile.dma.ddr_hbm_bw_bytes_per_s)
    copies = [e for e in res.events if e.track == "dma ddr->hbm" and e.socket == 0]
    assert len(copies) == 8


def test_lru_across_batches_and_eviction_copies_nothing(tmp_path: Path) -> None:
    # HBM sized for the router + KV + exactly two expert shards per socket
    prof = load_profile("sn40l")
    shard = expert_shard_bytes(prof, TINY.weight_bytes)
    kv = 1 * (4 + 2) * TINY.kv_bytes_per_token
    hbm = units.ceil_div(TINY.weight_bytes, 8) + units.ceil_div(kv, 8) + 2 * shard
    coord, results = _run("sn40l", 4, [0, 1, 0, 2, 1], 1, tmp_path, (f"socket.hbm_gib={hbm / units.GiB!r}",))
    assert coord.cache.slots(shard) == 2
    assert [r.hits for r in results] == [0, 0, 1, 0, 0]  # 0,1 miss; 0 hit; 2 evicts 1; 1 evicts 0
    assert coord.cache.evictions == 2
    events = [e for r in results for e in r.events]
    assert not [e for e in events if e.track.startswith("dma hbm->")]  # nothing copied back
    ddr = coord.node.models[0].memory[Tier.DDR]  # type: ignore[attr-defined]
    assert all(f"expert{e}" in ddr for e in range(4))  # DDR copies untouched by evictions


def test_sweep_reports_oom_and_goes_on() -> None:
    cfg = SweepConfig(platforms=("dgx-a100", "sn40l"), experts=(1, 50), batch_sizes=(1,), tokens=(2,),
                      model="tiny-llama", prompt_len=4, backend="local",
                      overrides=("host.dram_tib=0.00002", "socket.hbm_gib=0.00012"))
    rows = run_sweep(cfg, progress=False)
    by = {(r["platform"], r["experts"]): r for r in rows}
    assert by[("dgx-a100", 50)]["oom"] and "host" in by[("dgx-a100", 50)]["oom_reason"]
    assert not by[("dgx-a100", 1)]["oom"] and not by[("sn40l", 50)]["oom"]
    for r in rows:
        if not r["oom"]:
            assert r["total_ns"] == (r["router_ns"] + r["switch_ns"] + r["program_load_ns"]
                                     + r["argument_load_ns"] + r["host_ns"] + r["expert_ns"]) > 0


def test_composition_that_does_not_fit_names_the_tier() -> None:
    node = LocalNode(load_profile("sn40l", ["socket.ddr_tib=0.0000001"]))
    coord = CoECoordinator(node, CoESetup(TINY, 100, 1, 4, 2))
    with pytest.raises(OutOfMemory) as err:
        coord.load()
    assert err.value.tier == "ddr"


def _functional(node: object, tmp_path: Path, tokens: int = 6) -> None:
    store = WeightStore(tmp_path / "store")
    n, seed = 4, 7
    coord = CoECoordinator(node, CoESetup(TINY, n, 4, 5, tokens), store=store)  # type: ignore[arg-type]
    store.write_composition(TINY, coord.plan, n, seed)
    coord.load()
    spec = parse_workload(_trace(tmp_path, [2, 0, 3, 1, 2, 2], tokens=tokens, prompt_len=5))
    served = []
    for b in batches(spec, n, 4, None, 5, tokens, 0):
        res = coord.run_batch(b)
        served += [(r, req) for r, req in zip(res.requests, b, strict=True)]
    assert len(served) == 6
    router_w, head = make_weights(TINY, seed + n), make_route_head(TINY, n, seed + n)
    for rr, req in served:  # functional mode: the router on the sockets picked rr.expert
        tokens = prompt_token_ids(req, TINY.vocab_size)
        assert rr.expert == int(np.argmax(reference_expert_logits(TINY, router_w, head, tokens)[0]))
        ref = ReferenceModel(TINY, make_weights(TINY, seed + rr.expert))
        want = ref.generate(prompt_token_ids(req, TINY.vocab_size), req.output_tokens)[0]
        assert rr.tokens == [int(x) for x in want], f"request {req.id} (expert {rr.expert})"


def test_functional_coe_matches_each_experts_reference(tmp_path: Path) -> None:
    _functional(LocalNode(load_profile("sn40l")), tmp_path)


@pytest.mark.ray
def test_functional_coe_on_socket_actors(ray_session: None, tmp_path: Path) -> None:
    """The same requests and checks as the in-process test above, with 3 output tokens instead
    of 6: the property (the router on the sockets picks each expert, every token is the
    reference's) does not depend on how many tokens follow, and 3 still carries the KV cache
    across two decode steps on the actors. Each step is a Ray round trip and tens of real
    all-reduces between actor processes, so 6 tokens cost about twice as much here."""
    from sn40l_emu.cluster.ray_node import RayNode

    node = RayNode.create(load_profile("sn40l"))
    try:
        _functional(node, tmp_path, tokens=3)
    finally:
        node.close()


def test_prompt_tokens_deterministic() -> None:
    from sn40l_emu.coe.workload import Request

    r = Request(3, 1, 5, 2)
    assert np.array_equal(prompt_token_ids(r, TINY.vocab_size), prompt_token_ids(r, TINY.vocab_size))


def test_serving_reports_percentiles_per_policy() -> None:
    from sn40l_emu.experiments.coe_serve import run_serving

    prof_over = ("socket.hbm_gib=0.00017",)  # about three tiny experts fit in HBM at once
    rows = run_serving("sn40l", "tiny-llama", 12, 2, 50_000.0, 40, ["lru", "lfu", "opt"], prompt_len=4,
                       tokens=2, backend="local", overrides=prof_over, progress=False)
    by = {r["policy"]: r for r in rows}
    for r in rows:
        assert r["requests"] == 40 and r["p50_ns"] <= r["p90_ns"] <= r["p99_ns"]
        assert 0 <= r["hit_rate"] <= 1 and r["throughput_per_s"] > 0
    assert by["opt"]["hit_rate"] >= by["lru"]["hit_rate"]
    assert by["opt"]["hit_rate"] > 0


def test_composition_spread_over_two_emulated_nodes() -> None:
    """16 sockets = two SN40L nodes joined by the scale-out link: twice the DDR, TP16 experts."""
    cfg = SweepConfig(platforms=("sn40l",), experts=(4,), batch_sizes=(2,), tokens=(2,), model="llama2-7b",
                      prompt_len=4, backend="local", overrides=("node.sockets=16",))
    (row16,) = run_sweep(cfg, progress=False)
    (row8,) = run_sweep(SweepConfig(platforms=("sn40l",), experts=(4,), batch_sizes=(2,), tokens=(2,),
                                    model="llama2-7b", prompt_len=4, backend="local"), progress=False)
    assert row16["experts_per_node"] >= 2 * row8["experts_per_node"] - 1
    assert not row16["oom"] and row16["total_ns"] > 0
    # each socket holds a 1/16 shard: a cold switch moves half the bytes per socket
    assert row16["hbm_misses"] == row8["hbm_misses"] > 0
    assert abs(2 * row16["switch_ns"] - row8["switch_ns"]) <= 2 * row8["hbm_misses"]
