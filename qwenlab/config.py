"""QwenConfig: every number that decides the shape of a Qwen2.5 model.

What Qwen2.5 chose, and why it matters here:
- Field names are transformers' ``Qwen2Config`` names, so our config and a checkpoint's
  ``config.json`` read the same.
- ``head_dim = hidden_size / num_attention_heads`` (64 for 0.5B, 128 from 1.5B up). It must be
  even, because RoPE rotates coordinates in pairs.
- Grouped-query attention: ``num_key_value_heads`` divides ``num_attention_heads``; each KV head
  serves ``num_attention_heads // num_key_value_heads`` query heads.
- ``rope_theta = 1e6`` (not the 1e4 of the original RoPE) stretches the slowest rotation so
  that positions stay distinguishable over 32K-128K tokens.
- The small models (0.5B-3B) tie the LM head to the token embedding: with a 151,936-row
  vocabulary the embedding is a large share of a small model's parameters.

``attn_backend`` is ours, not transformers': it picks how attention is computed
("eager" | "sdpa" | "triton" | "auto"), never what it computes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Names a config may ask for; qwenlab.attention.register_backend adds new ones.
ATTN_BACKENDS = ["eager", "sdpa", "triton", "auto"]

# size: (vocab, layers, heads, kv_heads, hidden, intermediate, tied)
_QWEN25_SIZES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "0.5b": (151936, 24, 14, 2, 896, 4864, True),
    "1.5b": (151936, 28, 12, 2, 1536, 8960, True),
    "3b": (151936, 36, 16, 2, 2048, 11008, True),
    "7b": (152064, 28, 28, 4, 3584, 18944, False),
    "14b": (152064, 48, 40, 8, 5120, 13824, False),
    "32b": (152064, 64, 40, 8, 5120, 27648, False),
    "72b": (152064, 80, 64, 8, 8192, 29568, False),
}
PRESETS = tuple(f"qwen2.5-{size}" for size in _QWEN25_SIZES)


class ConfigError(ValueError):
    """A config that cannot describe a working model; the message says which field to fix."""


@dataclass
class QwenConfig:
    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645
    pad_token_id: int | None = None
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_key_value_groups(self) -> int:
        """Query heads per KV head (1 = multi-head attention, num_attention_heads = MQA)."""
        return self.num_attention_heads // self.num_key_value_heads

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta!r}")
        if self.rms_norm_eps <= 0:
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                f"({self.num_attention_heads}): every head needs the same head_dim")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) is not divisible by "
                f"num_key_value_heads ({self.num_key_value_heads}): in grouped-query attention "
                "each KV head serves a whole group of query heads")
        if self.head_dim % 2:
            raise ConfigError(
                f"head_dim ({self.head_dim} = {self.hidden_size} / {self.num_attention_heads}) "
                "is odd: RoPE rotates coordinates in pairs, so head_dim must be even")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ConfigError(
                f"attn_backend must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> QwenConfig:
        """The real shapes of a Qwen2.5 instruct model, e.g. ``QwenConfig.preset("qwen2.5-7b")``."""
        size = name.lower().removeprefix("qwen2.5-").removesuffix("-instruct")
        if size not in _QWEN25_SIZES:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        vocab, layers, heads, kv_heads, hidden, inter, tied = _QWEN25_SIZES[size]
        fields = dict(vocab_size=vocab, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, hidden_size=hidden, intermediate_size=inter,
                      tie_word_embeddings=tied, max_position_embeddings=32768,
                      rope_theta=1e6, rms_norm_eps=1e-6)
        return cls(**{**fields, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> QwenConfig:
        """The course's CPU model: ~1.3M parameters, the Qwen2.5 design at toy width.

        4 layers, 4 query heads sharing 2 KV heads (GQA), head_dim 32, a 4,096-token vocabulary
        (the size of the course tokenizer) and 1,024 positions.
        """
        fields = dict(vocab_size=4096, hidden_size=128, intermediate_size=352,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
        return cls(**{**fields, **overrides})

    def replace(self, **changes: Any) -> QwenConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ transformers interop
    def to_hf(self):
        """The equivalent ``transformers.Qwen2Config``."""
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings, rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
            use_sliding_window=False, hidden_act="silu")

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> QwenConfig:
        """Read a ``transformers.Qwen2Config`` (or the dict of a ``config.json``)."""
        d = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        model_type = d.get("model_type", "qwen2")
        if model_type != "qwen2":
            raise ConfigError(f"expected a Qwen2 config (model_type 'qwen2'), got {model_type!r}")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"Qwen2 uses SwiGLU with silu; hidden_act is {d['hidden_act']!r}")
        if d.get("use_sliding_window"):
            raise ConfigError("use_sliding_window=True is not supported: Qwen2.5 models attend "
                              "over the whole context")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ConfigError(f"rope type {rope_type!r} is not supported; only plain RoPE")
        theta = rope.get("rope_theta", d.get("rope_theta", 1e6))
        head_dim = d.get("head_dim")
        if head_dim is not None and head_dim * d["num_attention_heads"] != d["hidden_size"]:
            raise ConfigError(f"head_dim {head_dim} x {d['num_attention_heads']} heads does not "
                              f"equal hidden_size {d['hidden_size']}")
        eos = d.get("eos_token_id")
        if isinstance(eos, list):  # generation may list several stop tokens; keep the first
            eos = eos[0] if eos else None
        fields = dict(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            max_position_embeddings=d.get("max_position_embeddings", 32768),
            rope_theta=float(theta), rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"), eos_token_id=eos,
            pad_token_id=d.get("pad_token_id"))
        return cls(**{**fields, **overrides})
