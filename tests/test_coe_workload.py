"""CoE workloads: parsing, seeded expert choice, Zipf frequencies, Poisson arrivals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sn40l_emu.coe.workload import (
    Request,
    WorkloadKind,
    batches,
    expert_probabilities,
    expert_sequence,
    parse_trace_lines,
    parse_workload,
    poisson_arrivals,
    requests,
    zipf_probabilities,
    zipf_rank_order,
)
from sn40l_emu.errors import ConfigError


def line(**kw: object) -> str:
    rec: dict[str, object] = {"prompt": "hi", "expert": 0, "prompt_len": 8, "output_tokens": 20}
    rec.update(kw)
    return json.dumps(rec)


def test_parse_synthetic() -> None:
    assert parse_workload("uniform").kind is WorkloadKind.UNIFORM
    spec = parse_workload("zipf:1.2")
    assert (spec.kind, spec.zipf_s, str(spec)) == (WorkloadKind.ZIPF, 1.2, "zipf:1.2")
    for bad in ("zipf:0", "zipf:-1", "zipf:abc", "zipf:nan", "normal", "no/such/file.jsonl"):
        with pytest.raises(ConfigError):
            parse_workload(bad)


def test_parse_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(line(expert=3) + "\n\n" + line(prompt=7, expert=1, output_tokens=200) + "\n")
    spec = parse_workload(str(path))
    assert spec.kind is WorkloadKind.TRACE
    assert [(r.prompt, r.expert, r.output_tokens, r.line) for r in spec.trace] == [
        ("hi", 3, 20, 1), (7, 1, 200, 3)]
    reqs = requests(spec, 4, 2, prompt_len=1, output_tokens=1, seed=0)
    assert reqs == [Request(0, 3, 8, 20, 0, "hi"), Request(1, 1, 8, 200, 0, 7)]
    with pytest.raises(ConfigError, match=r"t\.jsonl:1\.expert"):
        requests(spec, 3, 2, prompt_len=1, output_tokens=1, seed=0)  # expert 3 >= N=3
    with pytest.raises(ConfigError, match="n_requests"):
        requests(spec, 4, 3, prompt_len=1, output_tokens=1, seed=0)
    whole = batches(spec, 4, batch=8, n_batches=None, prompt_len=1, output_tokens=1, seed=0)
    assert [len(b) for b in whole] == [2]


@pytest.mark.parametrize(("text", "field"), [
    ("{not json", "t:2"),
    ("[1, 2]", "t:2"),
    (line(expert=-1), "t:2.expert"),
    (line(expert=1.5), "t:2.expert"),
    (line(expert=True), "t:2.expert"),
    (line(prompt_len=0), "t:2.prompt_len"),
    (line(output_tokens="20"), "t:2.output_tokens"),
    (line(prompt=None), "t:2.prompt"),
    (line(extra=1), "t:2.extra"),
    (json.dumps({"prompt": "x", "expert": 0, "prompt_len": 1}), "t:2.output_tokens"),
])
def test_trace_errors_name_line_and_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_trace_lines([line(), text], "t")
    assert info.value.field == field


def test_empty_trace() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        parse_trace_lines(["", "  "], "t")


def test_same_seed_same_sequence() -> None:
    for text in ("uniform", "zipf:1.1"):
        spec = parse_workload(text)
        a = batches(spec, 150, batch=8, n_batches=20, prompt_len=64, output_tokens=20, seed=7)
        b = batches(spec, 150, batch=8, n_batches=20, prompt_len=64, output_tokens=20, seed=7)
        c = batches(spec, 150, batch=8, n_batches=20, prompt_len=64, output_tokens=20, seed=8)
        assert a == b
        assert a != c
        assert [len(x) for x in a] == [8] * 20
        assert [r.id for x in a for r in x] == list(range(160))
        assert all(0 <= r.expert < 150 and r.arrival_ns == 0 for x in a for r in x)
    assert poisson_arrivals(5.0, 50, 3) == poisson_arrivals(5.0, 50, 3)


def test_longer_sequence_extends_shorter() -> None:
    spec = parse_workload("zipf:1.0")
    assert expert_sequence(spec, 40, 300, 1)[:100] == expert_sequence(spec, 40, 100, 1)


def test_zipf_frequencies_follow_distribution() -> None:
    n, s, draws, seed = 20, 1.2, 200_000, 11
    spec = parse_workload(f"zipf:{s}")
    seq = expert_sequence(spec, n, draws, seed)
    freq = np.bincount(seq, minlength=n) / draws
    p = expert_probabilities(spec, n, seed)
    assert p.sum() == pytest.approx(1.0)
    # by rank: p(k) ∝ k^-S
    by_rank = zipf_probabilities(n, s)
    assert by_rank[0] / by_rank[1] == pytest.approx(2**s)
    order = zipf_rank_order(n, seed)
    np.testing.assert_allclose(p[order], by_rank)
    # every expert within 4 standard deviations of its binomial expectation
    sigma = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(freq - p) < 4 * sigma)
    # the permutation is seeded: the most popular expert is not simply id 0 for every seed
    assert len({int(zipf_rank_order(n, sd)[0]) for sd in range(10)}) > 1


def test_uniform_frequencies() -> None:
    seq = expert_sequence(parse_workload("uniform"), 10, 100_000, 2)
    freq = np.bincount(seq, minlength=10) / 100_000
    assert np.all(np.abs(freq - 0.1) < 4 * np.sqrt(0.09 / 100_000))


def test_poisson_mean_interarrival() -> None:
    rate = 250.0
    times = poisson_arrivals(rate, 100_000, seed=5)
    assert all(isinstance(t, int) for t in times[:10])
    gaps = np.diff([0, *times])
    assert np.all(gaps >= 0)
    mean_ns = 1e9 / rate
    # the mean of n exponential gaps has std mean/sqrt(n)
    assert abs(gaps.mean() - mean_ns) < 4 * mean_ns / np.sqrt(len(gaps))
    assert np.std(gaps) == pytest.approx(mean_ns, rel=0.03)  # exponential: std == mean
    with pytest.raises(ConfigError):
        poisson_arrivals(0.0, 10, 0)


def test_requests_with_arrivals() -> None:
    arrivals = poisson_arrivals(10.0, 5, 0)
    reqs = requests(parse_workload("uniform"), 4, 5, 16, 20, seed=0, arrivals_ns=arrivals)
    assert [r.arrival_ns for r in reqs] == arrivals
    with pytest.raises(ConfigError, match="arrivals_ns"):
        requests(parse_workload("uniform"), 4, 4, 16, 20, seed=0, arrivals_ns=arrivals)


def test_argument_checks() -> None:
    spec = parse_workload("uniform")
    with pytest.raises(ConfigError, match="n_experts"):
        batches(spec, 0, 1, 1, 1, 1, 0)
    with pytest.raises(ConfigError, match="batch"):
        batches(spec, 4, 0, 1, 1, 1, 0)
    with pytest.raises(ConfigError, match="n_batches"):
        batches(spec, 4, 1, None, 1, 1, 0)
    with pytest.raises(ConfigError, match="output_tokens"):
        batches(spec, 4, 1, 1, 1, 0, 0)


@pytest.mark.parametrize("text, allowed", [
    ("[" * 5000 + "]" * 5000, "flat JSON object"),  # json would recurse 5,000 deep
    ('{"prompt": 1, "expert": ' + "9" * 5000 + ', "prompt_len": 1, "output_tokens": 1}', "ValueError"),
    ('{"prompt": 1, "expert": NaN, "prompt_len": 1, "output_tokens": 1}', "not a finite number"),
    ('{"prompt": 1, "expert": 1e400, "prompt_len": 1, "output_tokens": 1}', "an integer in"),
    ('{"prompt": 1, "expert": 4294967296, "prompt_len": 1, "output_tokens": 1}', "an integer in"),
    ('{"prompt": {"a": 1}, "expert": 0, "prompt_len": 1, "output_tokens": 1}', "flat JSON object"),
    ('{"prompt": "' + "x" * 70_000 + '"}', "a line of at most"),
])
def test_trace_lines_are_bounded(text: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_trace_lines([line(), text], "t")
    assert info.value.field.startswith("t:2") and allowed in info.value.allowed
    assert len(str(info.value)) < 700  # the value is quoted shortened, never echoed whole


def test_trace_files_that_are_not_text_or_too_big_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sn40l_emu.coe.workload as workload

    binary = tmp_path / "t.jsonl"
    binary.write_bytes(line().encode() + b"\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        workload.parse_workload(str(binary))
    monkeypatch.setattr(workload, "MAX_TRACE_BYTES", 100)
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join([line()] * 10))
    with pytest.raises(ConfigError, match="at most 100 bytes"):
        workload.parse_workload(str(big))
    with pytest.raises(ConfigError, match="workload"):
        workload.parse_workload("a" * 5000)  # a name too long for the file system: no OSError


_CSV_HEADER = "timestamp,expert,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize("body, where", [
    ("0,0,1e400,2\n", "row 2 prompt tokens"),  # int(float('1e400')) raised OverflowError
    ("0,0\n", "row 2"),  # a short row raised IndexError
    ("inf,0,4,2\n", "row 2 timestamp"),
    ("0,0,4,2\n2e6,0,4,2\n", "trace timestamps"),  # a span beyond units.MAX_TIME_NS
    ("0,0,4,4294967296\n", "row 2 output tokens"),
    ("0,0,4,2\x00\n", "row 2 output tokens"),  # a NUL byte in a cell
    ('0,0,4,2,"' + "x" * 200_000 + '"\n', "trace"),  # a cell over csv's field limit: csv.Error
])
def test_csv_arrival_traces_are_bounded(tmp_path: Path, body: str, where: str) -> None:
    from sn40l_emu.coe.fleet_arrivals import read_trace_csv

    f = tmp_path / "t.csv"
    f.write_text(_CSV_HEADER + body)
    with pytest.raises(ConfigError) as info:
        read_trace_csv(f, 4)
    assert where in info.value.field and "\n" not in str(info.value)


def test_csv_arrival_trace_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    from sn40l_emu.coe.fleet_arrivals import read_trace_csv

    f = tmp_path / "t.csv"
    f.write_bytes(_CSV_HEADER.encode() + bytes(range(128, 256)))
    with pytest.raises(ConfigError, match="UTF-8"):
        read_trace_csv(f, 4)
