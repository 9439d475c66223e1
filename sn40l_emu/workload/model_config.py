"""Transformer shapes, read from a Hugging Face ``config.json`` (docs/model.md §6).

The shipped models live in ``sn40l_emu/profiles/models/<name>.json`` with the
public field names, so a user can drop in any Llama-style ``config.json``.
Only the fields that set shapes are read; everything else (``rope_scaling``,
``sliding_window``, token ids, ...) is recorded in the file but not modelled.
Every derived quantity assumes BF16 storage: the emulator runs BF16 whatever
``torch_dtype`` says, as the SN40L and the DGX baselines do (docs/model.md §1, §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sn40l_emu.errors import ConfigError
from sn40l_emu.yaml_load import load_json_file

BF16_BYTES = 2  # bytes per BF16 value: weights, KV cache and activations in timing mode
_SUPPORTED_ACT = "silu"


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only Llama-style transformer (RMSNorm, RoPE, GQA, SwiGLU)."""

    name: str
    architectures: tuple[str, ...]
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    torch_dtype: str
    head_dim: int
    source: str = ""

    # ---- derived shapes -------------------------------------------------
    @property
    def q_width(self) -> int:
        """Columns of the query projection (heads x head_dim)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Columns of the K (or V) projection: KV heads x head_dim."""
        return self.num_key_value_heads * self.head_dim

    @property
    def layer_param_count(self) -> int:
        """Parameters of one decoder layer: Q, K, V, O, gate, up, down and two RMSNorm weights."""
        h = self.hidden_size
        attn = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        ffn = 3 * h * self.intermediate_size
        return attn + ffn + 2 * h

    @property
    def embedding_param_count(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_param_count(self) -> int:
        """The LM head; zero when it shares the embedding matrix (tied)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def param_count(self) -> int:
        """All parameters: layers, embedding, final norm and (untied) LM head."""
        return (
            self.num_hidden_layers * self.layer_param_count
            + self.embedding_param_count
            + self.hidden_size
            + self.lm_head_param_count
        )

    @property
    def weight_bytes(self) -> int:
        """BF16 bytes of all weights (2 B per parameter)."""
        return self.param_count * BF16_BYTES

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        """K and V of one token in one layer, BF16."""
        return 2 * self.kv_width * BF16_BYTES

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers, BF16 (docs/model.md §6: 128 KiB for Llama3.1-8B)."""
        return self.num_hidden_layers * self.kv_bytes_per_token_per_layer


_INT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "vocab_size",
    "max_position_embeddings",
)


_MAX_DIM = 2**31  # a sanity ceiling on every shape (far above any real model); refuses typos like 1e30
_MAX_FLOAT = 1e30


def _positive_int(name: str, field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_DIM:
        raise ConfigError(f"{name}.{field}", value, f"a positive integer <= {_MAX_DIM}")
    return value


def _positive_float(name: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}.{field}", value, f"a finite number > 0 and <= {_MAX_FLOAT:g}")
    try:
        out = float(value)
    except OverflowError:
        raise ConfigError(f"{name}.{field}", value, f"a finite number > 0 and <= {_MAX_FLOAT:g}") from None
    if not 0 < out <= _MAX_FLOAT:  # also refuses NaN and Infinity, which json accepts
        raise ConfigError(f"{name}.{field}", value, f"a finite number > 0 and <= {_MAX_FLOAT:g}")
    return out


def model_from_dict(data: dict[str, Any], name: str) -> ModelConfig:
    """Validate a parsed ``config.json``; every error names the offending field."""
    for field in (*_INT_FIELDS, "rms_norm_eps", "rope_theta"):
        if field not in data:
            raise ConfigError(
                f"{name}.{field}", None, "required field of a Llama-style config.json"
            )
    ints = {f: _positive_int(name, f, data[f]) for f in _INT_FIELDS}
    heads = ints["num_attention_heads"]
    kv_heads = _positive_int(name, "num_key_value_heads", data.get("num_key_value_heads", heads))
    if heads % kv_heads:
        raise ConfigError(
            f"{name}.num_key_value_heads", kv_heads, f"a divisor of num_attention_heads={heads}"
        )
    if "head_dim" in data and data["head_dim"] is not None:
        head_dim = _positive_int(name, "head_dim", data["head_dim"])
    elif ints["hidden_size"] % heads:
        raise ConfigError(
            f"{name}.hidden_size", ints["hidden_size"],
            f"a multiple of num_attention_heads={heads} (or give head_dim)",
        )
    else:
        head_dim = ints["hidden_size"] // heads
    if head_dim % 2:
        raise ConfigError(f"{name}.head_dim", head_dim, "an even number (RoPE rotates pairs)")
    act = data.get("hidden_act", _SUPPORTED_ACT)
    if act != _SUPPORTED_ACT:
        raise ConfigError(f"{name}.hidden_act", act, f"{_SUPPORTED_ACT!r} (SwiGLU FFN)")
    for flag in ("attention_bias", "mlp_bias"):
        if data.get(flag, False):
            raise ConfigError(f"{name}.{flag}", data[flag], "false (biases are not modelled)")
    tie = data.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ConfigError(f"{name}.tie_word_embeddings", tie, "true or false")
    archs = data.get("architectures", [])
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"{name}.architectures", archs, "a list of class names")
    return ModelConfig(
        name=name,
        architectures=tuple(archs),
        num_key_value_heads=kv_heads,
        rms_norm_eps=_positive_float(name, "rms_norm_eps", data["rms_norm_eps"]),
        rope_theta=_positive_float(name, "rope_theta", data["rope_theta"]),
        tie_word_embeddings=tie,
        torch_dtype=str(data.get("torch_dtype", "bfloat16")),
        head_dim=head_dim,
        source=str(data.get("_source", "")),
        **ints,
    )


def _models_dir() -> Path:
    return Path(str(resources.files("sn40l_emu") / "profiles" / "models"))


def shipped_model_path(name: str) -> Path:
    """Where the shipped config of ``name`` lives (it may not exist)."""
    return _models_dir() / f"{name}.json"


def shipped_models() -> tuple[str, ...]:
    """Names of the model configs shipped with the package, sorted."""
    return tuple(sorted(p.stem for p in _models_dir().glob("*.json")))


def load_model(name_or_path: str | Path) -> ModelConfig:
    """A shipped model by name (``"llama3.1-8b"``) or a user's ``config.json`` by path."""
    path = Path(name_or_path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        is_file = False
    if not is_file:
        shipped = shipped_model_path(str(name_or_path))
        try:
            found = shipped.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                "model", str(name_or_path),
                f"one of {', '.join(shipped_models())} or the path of a config.json",
            )
        path = shipped
    data = load_json_file(path, "model")
    if not isinstance(data, dict):
        raise ConfigError("model", str(path), "a JSON object (a config.json)")
    return model_from_dict(data, path.stem)
