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

Mixture of experts (chapter 13, ``qwenlab.moe``): ``num_experts > 0`` replaces the SwiGLU MLP
of some blocks by a sparse MoE block, with transformers' ``Qwen2MoeConfig`` names:
``num_experts``, ``num_experts_per_tok`` (top-k), ``moe_intermediate_size`` (each routed
expert), ``shared_expert_intermediate_size``, ``norm_topk_prob``, ``decoder_sparse_step`` and
``mlp_only_layers`` (which blocks are sparse), ``router_aux_loss_coef`` and
``output_router_logits`` (the load-balancing loss). ``router_z_loss_coef`` and
``moe_capacity_factor`` are ours (off by default, so a model equals transformers' Qwen2-MoE):
the router z-loss and the capacity limit that drops tokens when an expert is full.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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

# The published mixture-of-experts Qwen models, from their config.json files:
# (vocab, layers, heads, kv_heads, hidden, intermediate, experts, top-k, moe_intermediate,
#  shared_expert_intermediate)
_QWEN_MOE_SIZES: dict[str, tuple[int, ...]] = {
    "qwen1.5-moe-a2.7b": (151936, 24, 16, 16, 2048, 5632, 60, 4, 1408, 5632),
    "qwen2-57b-a14b": (151936, 28, 28, 4, 3584, 18944, 64, 8, 2560, 20480),
}
MOE_PRESETS = tuple(_QWEN_MOE_SIZES)


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
    # mixture of experts (transformers' Qwen2MoeConfig names and defaults; 0 experts = dense)
    num_experts: int = 0
    num_experts_per_tok: int = 4
    moe_intermediate_size: int = 1408
    shared_expert_intermediate_size: int = 5632
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    router_aux_loss_coef: float = 0.001
    output_router_logits: bool = False
    # ours: the router z-loss weight, and the capacity factor (None = no expert ever drops)
    router_z_loss_coef: float = 0.0
    moe_capacity_factor: float | None = None

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

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether block ``layer_idx`` has the sparse MoE block (transformers' rule): every
        ``decoder_sparse_step``-th block, except those listed in ``mlp_only_layers``."""
        return (self.num_experts > 0 and layer_idx not in self.mlp_only_layers
                and (layer_idx + 1) % self.decoder_sparse_step == 0)

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
        self._validate_moe()

    def _validate_moe(self) -> None:
        n = self.num_experts
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"num_experts must be a non-negative integer (0 = a dense model), "
                              f"got {n!r}")
        if n == 0:
            return
        for name in ("num_experts_per_tok", "moe_intermediate_size",
                     "shared_expert_intermediate_size", "decoder_sparse_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_experts_per_tok > n:
            raise ConfigError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_experts ({n}): "
                "a token cannot be routed to more experts than there are")
        bad = [i for i in self.mlp_only_layers
               if not isinstance(i, int) or not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ConfigError(f"mlp_only_layers lists {bad}, which are not layer indices in "
                              f"[0, {self.num_hidden_layers})")
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.moe_capacity_factor is not None and self.moe_capacity_factor <= 0:
            raise ConfigError(f"moe_capacity_factor must be positive (or None for no capacity "
                              f"limit), got {self.moe_capacity_factor!r}")

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

    @classmethod
    def tiny_moe(cls, **overrides: Any) -> QwenConfig:
        """``tiny()`` with a Qwen2-MoE block in every layer: 8 experts, top-2, and a shared
        expert. Each routed expert is 88 wide and the shared one 176, so a token's active
        MLP weights (shared + 2 routed = 3 x 128 x 352) equal those of ``tiny()``'s 352-wide
        MLP, while the block holds 8 routed experts: ~2.1M parameters in all, ~1.3M active.
        The load-balancing loss is on (``output_router_logits``, coefficient 0.01).
        """
        fields = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=88,
                      shared_expert_intermediate_size=176, norm_topk_prob=False,
                      output_router_logits=True, router_aux_loss_coef=0.01)
        return cls.tiny(**{**fields, **overrides})

    @classmethod
    def moe_preset(cls, name: str, **overrides: Any) -> QwenConfig:
        """The real shapes of a published Qwen MoE model, e.g. ``"qwen2-57b-a14b"``."""
        key = name.lower().removeprefix("qwen/").removesuffix("-instruct").removesuffix("-chat")
        if key not in _QWEN_MOE_SIZES:
            raise ConfigError(f"unknown MoE preset {name!r}; choose one of "
                              f"{', '.join(MOE_PRESETS)}")
        vocab, layers, heads, kv, hidden, inter, experts, k, moe_inter, shared = \
            _QWEN_MOE_SIZES[key]
        fields = dict(vocab_size=vocab, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, hidden_size=hidden, intermediate_size=inter,
                      num_experts=experts, num_experts_per_tok=k, moe_intermediate_size=moe_inter,
                      shared_expert_intermediate_size=shared, tie_word_embeddings=False,
                      max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6)
        return cls(**{**fields, **overrides})

    def replace(self, **changes: Any) -> QwenConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ transformers interop
    def to_hf(self):
        """The equivalent ``transformers.Qwen2Config`` (``Qwen2MoeConfig`` with experts)."""
        from transformers import Qwen2Config

        if self.is_moe:
            return self._to_hf_moe()
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

    def _to_hf_moe(self):
        from transformers import Qwen2MoeConfig

        return Qwen2MoeConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
            use_sliding_window=False, hidden_act="silu", qkv_bias=True,
            num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
            moe_intermediate_size=self.moe_intermediate_size,
            shared_expert_intermediate_size=self.shared_expert_intermediate_size,
            norm_topk_prob=self.norm_topk_prob, decoder_sparse_step=self.decoder_sparse_step,
            mlp_only_layers=list(self.mlp_only_layers),
            router_aux_loss_coef=self.router_aux_loss_coef,
            output_router_logits=self.output_router_logits)

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> QwenConfig:
        """Read a ``transformers.Qwen2Config`` or ``Qwen2MoeConfig`` (or a ``config.json`` dict)."""
        d = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        model_type = d.get("model_type", "qwen2")
        if model_type not in ("qwen2", "qwen2_moe"):
            raise ConfigError(f"expected a Qwen2 config (model_type 'qwen2' or 'qwen2_moe'), "
                              f"got {model_type!r}")
        if model_type == "qwen2_moe" and not d.get("qkv_bias", True):
            raise ConfigError("qkv_bias=False is not supported: Qwen2 attention has q/k/v biases")
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
        if model_type == "qwen2_moe":
            moe = dict(num_experts=60, num_experts_per_tok=4, moe_intermediate_size=1408,
                       shared_expert_intermediate_size=5632, norm_topk_prob=False,
                       decoder_sparse_step=1, mlp_only_layers=[], router_aux_loss_coef=0.001,
                       output_router_logits=False)  # Qwen2MoeConfig's defaults
            fields.update({k: d[k] if d.get(k) is not None else v for k, v in moe.items()})
            fields["mlp_only_layers"] = list(fields["mlp_only_layers"])
        return cls(**{**fields, **overrides})
