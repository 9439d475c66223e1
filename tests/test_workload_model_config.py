"""Model configs: shipped shapes match docs/model.md §6; bad configs name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sn40l_emu.errors import ConfigError
from sn40l_emu.units import KiB
from sn40l_emu.workload.model_config import (
    load_model,
    model_from_dict,
    shipped_model_path,
    shipped_models,
)

# docs/model.md §6: params (billions) and KV cache per token.
SPEC_SHAPES = {
    "llama2-7b": (6.74, 512 * KiB),
    "llama3.1-8b": (8.03, 128 * KiB),
    "llama3.1-70b": (70.55, 320 * KiB),
    "llama3.1-405b": (405.85, 504 * KiB),
}


def test_shipped_models_listed() -> None:
    names = shipped_models()
    for expected in (*SPEC_SHAPES, "mistral-7b", "tiny-llama", "tiny-gqa"):
        assert expected in names


@pytest.mark.parametrize("name", sorted(SPEC_SHAPES))
def test_param_count_and_kv_bytes_match_spec(name: str) -> None:
    model = load_model(name)
    params_b, kv_bytes = SPEC_SHAPES[name]
    assert model.param_count / 1e9 == pytest.approx(params_b, rel=0.005)
    assert model.weight_bytes == 2 * model.param_count
    assert model.kv_bytes_per_token == kv_bytes
    assert model.head_dim == 128
    assert not model.tie_word_embeddings


def test_spec_bf16_bytes() -> None:
    # docs/model.md §6 "BF16 bytes" column, in GB.
    for name, gb in (("llama2-7b", 13.48), ("llama3.1-8b", 16.06), ("llama3.1-70b", 141.1),
                     ("llama3.1-405b", 811.7)):
        assert load_model(name).weight_bytes / 1e9 == pytest.approx(gb, rel=0.005)


def test_mistral_shapes() -> None:
    m = load_model("mistral-7b")
    assert (m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_key_value_heads,
            m.num_hidden_layers, m.vocab_size, m.head_dim) == (4096, 14336, 32, 8, 32, 32000, 128)
    assert m.param_count / 1e9 == pytest.approx(7.24, rel=0.005)


def test_every_shipped_json_has_a_source() -> None:
    for name in shipped_models():
        assert load_model(name).source


def test_load_from_path_and_unknown_name(tmp_path: Path) -> None:
    data = json.loads(shipped_model_path("tiny-llama").read_text())
    path = tmp_path / "my-model.json"
    path.write_text(json.dumps(data))
    model = load_model(path)
    assert model.name == "my-model" and model.hidden_size == 64
    with pytest.raises(ConfigError, match="no-such-model"):
        load_model("no-such-model")


def _base() -> dict[str, object]:
    return dict(json.loads(shipped_model_path("tiny-gqa").read_text()))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_size", 0),
        ("num_hidden_layers", -1),
        ("vocab_size", "many"),
        ("num_key_value_heads", 3),
        ("rms_norm_eps", 0),
        ("hidden_act", "gelu"),
        ("head_dim", 15),
        ("tie_word_embeddings", "yes"),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    data = _base()
    data[field] = value
    with pytest.raises(ConfigError) as info:
        model_from_dict(data, "bad")
    assert info.value.field == f"bad.{field}"


def test_missing_field_is_named() -> None:
    data = _base()
    del data["intermediate_size"]
    with pytest.raises(ConfigError, match=r"bad\.intermediate_size"):
        model_from_dict(data, "bad")


def test_head_dim_defaults_to_hidden_over_heads() -> None:
    data = _base()
    del data["head_dim"]
    assert model_from_dict(data, "m").head_dim == 128 // 8


def test_tied_embeddings_count_once() -> None:
    data = _base()
    untied = model_from_dict(data, "m")
    data["tie_word_embeddings"] = True
    tied = model_from_dict(data, "m")
    assert untied.param_count - tied.param_count == tied.vocab_size * tied.hidden_size


def test_all_missing_fields_reported_at_once() -> None:
    data = _base()
    for field in ("hidden_size", "vocab_size", "rope_theta"):
        del data[field]
    with pytest.raises(ConfigError) as info:
        model_from_dict(data, "bad")
    for field in ("bad.hidden_size", "bad.vocab_size", "bad.rope_theta"):
        assert field in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("num_local_experts", 8),  # Mixtral
    ("num_experts", 60),  # Qwen2-MoE, OLMoE
    ("n_routed_experts", 64),  # DeepSeek
    ("num_experts_per_tok", 2),
])
def test_mixture_of_experts_config_is_refused(field: str, value: int) -> None:
    """A Mixtral config was silently modelled as a dense model."""
    data = _base()
    data[field] = value
    with pytest.raises(ConfigError, match="mixture-of-experts") as info:
        model_from_dict(data, "moe")
    assert info.value.field == f"moe.{field}"


def test_mixtral_config_file_is_refused_by_the_cli(tmp_path: Path) -> None:
    """Run as a user would: ``capacity --model mixtral.json`` exits 2 naming the field."""
    import os
    import subprocess
    import sys

    data = _base()
    data.update({"architectures": ["MixtralForCausalLM"], "num_local_experts": 8, "num_experts_per_tok": 2})
    path = tmp_path / "mixtral.json"
    path.write_text(json.dumps(data))
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "sn40l_emu.cli", "capacity", "--model", str(path)],
                       env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "mixtral.num_local_experts" in r.stderr


def test_moe_fields_set_to_null_are_dense() -> None:
    data = _base()
    data["num_local_experts"] = None
    assert model_from_dict(data, "m").hidden_size == 128


@pytest.mark.parametrize("text", ["[" * 5000, '{"hidden_size": ' + "9" * 5000 + "}", '{"rope_theta": Infinity}',
                                  "\x00\x01binary", ""])
def test_hostile_config_json_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    if text.startswith('{"rope_theta"'):
        data = _base()
        data.update(json.loads(text))
        path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_model(path)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)
