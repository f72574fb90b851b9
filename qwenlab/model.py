"""The Qwen2.5 decoder: embeddings, a stack of pre-norm blocks, a final norm and the LM head.

    h = embed_tokens(ids)
    for each block:  h = h + Attention(RMSNorm(h))      # mixes information across positions
                     h = h + MLP(RMSNorm(h))            # transforms each position on its own
    logits = lm_head(RMSNorm(h))

Pre-norm (normalising the input of each sub-layer, not its output) keeps the residual stream
an unnormalised sum, which is what lets deep stacks train stably. Module and parameter names
follow transformers' ``Qwen2ForCausalLM`` (``model.layers.3.self_attn.q_proj.weight`` ...), so
a checkpoint's tensors load by name and the two implementations read side by side.

With ``config.num_experts > 0`` the MLP of the chosen blocks is a sparse mixture of experts
(``qwenlab.moe``; transformers' ``Qwen2MoeForCausalLM``), and with ``output_router_logits`` the
loss adds the router's load-balancing loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention, causal_mask
from .config import QwenConfig
from .kv_cache import KVCache
from .loss import causal_lm_loss, chunked_lm_loss
from .mlp import MLP
from .moe import Router, SparseMoeBlock, load_balancing_loss, router_z_loss
from .norm import RMSNorm
from .rope import RotaryEmbedding


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None = None            # (B, T, V), or None when a loop opts out
    loss: torch.Tensor | None = None              # mean shifted cross-entropy, given labels
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each block's output
    # MoE models, when router logits are asked for (output_router_logits):
    router_logits: tuple[torch.Tensor, ...] | None = None  # (B*T, E) per sparse block
    aux_loss: torch.Tensor | None = None          # load-balancing loss (already in .loss)
    z_loss: torch.Tensor | None = None            # router z-loss, when router_z_loss_coef > 0


class DecoderBlock(nn.Module):
    """One transformer block (transformers: ``Qwen2DecoderLayer``)."""

    def __init__(self, config: QwenConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.is_moe_layer(layer_idx)
        self.mlp = SparseMoeBlock(config) if self.is_moe else \
            MLP(config.hidden_size, config.intermediate_size)

    def forward(self, h, cos, sin, mask=None, cache: KVCache | None = None,
                router_logits: list | None = None):
        """router_logits: a list that a sparse block appends its (B*T, E) logits to."""
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        x = self.post_attention_layernorm(h)
        if self.is_moe and router_logits is not None:
            out, logits = self.mlp(x, return_router_logits=True)
            router_logits.append(logits)
            return h + out
        return h + self.mlp(x)


def padding_aware_mask(attention_mask: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """The attention mask for T new queries given a (B, S) padding mask (1 = real token).

    None means "plain causal" and lets backends take their fastest path. With padding, a bool
    (B, 1, T, S) mask: causal, and no attending to pad keys. A pad query may still attend to
    itself, so its row is never empty (an all-masked softmax row is NaN).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    S = attention_mask.shape[1]
    causal = causal_mask(T, S, attention_mask.device)                     # (T, S)
    before = torch.ones(T, S, dtype=torch.bool, device=attention_mask.device).tril(S - T - 1)
    is_self = causal & ~before                                            # (T, S) diagonal
    real_key = attention_mask.bool()[:, None, None, :]          # (B, 1, 1, S)
    return (causal & real_key) | is_self


class QwenModel(nn.Module):
    """Embeddings, blocks and final norm (transformers: ``Qwen2Model``)."""

    def __init__(self, config: QwenConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(DecoderBlock(config, i)
                                    for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta,
                                          min(config.max_position_embeddings, 4096))

    def forward(self, input_ids, attention_mask=None, position_ids=None,
                cache: KVCache | None = None, output_hidden_states: bool = False,
                router_logits: list | None = None):
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, past, T, input_ids.device)
        cos, sin = self.rotary_emb(position_ids, num_positions=past + T)  # (B|1, T, D)
        mask = padding_aware_mask(attention_mask, T)

        h = self.embed_tokens(input_ids)  # (B, T, C)
        hidden_states = [h] if output_hidden_states else None
        for layer in self.layers:
            h = layer(h, cos, sin, mask, cache, router_logits)
            if output_hidden_states:
                hidden_states.append(h)
        if cache is not None:
            cache.advance(T)
        h = self.norm(h)
        if output_hidden_states:
            hidden_states[-1] = h  # as transformers reports it: the last entry is normalised
        return h, (tuple(hidden_states) if output_hidden_states else None)


def default_position_ids(attention_mask, past: int, T: int, device) -> torch.Tensor:
    """Positions of the T new tokens: counted from the first real token when rows are padded."""
    if attention_mask is None:
        return torch.arange(past, past + T, device=device)[None]  # (1, T)
    positions = attention_mask.long().cumsum(-1) - 1                # (B, S)
    return positions.clamp(min=0)[:, -T:]


class QwenForCausalLM(nn.Module):
    """The decoder plus the LM head (transformers: ``Qwen2ForCausalLM``)."""

    def __init__(self, config: QwenConfig):
        super().__init__()
        self.config = config
        self.model = QwenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """With tied embeddings the LM head *is* the embedding matrix (one tensor, one grad)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, Router):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied head is counted once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.model.embed_tokens.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                cache: KVCache | None = None, output_hidden_states: bool = False,
                logits_to_keep: int = 0, return_logits: bool = True,
                output_router_logits: bool | None = None) -> CausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V).

        attention_mask (B, past + T): 1 for real tokens, 0 for padding (left padding in batches).
        labels (B, T): the loss is the mean next-token cross-entropy over labels != -100.
        logits_to_keep: only the last n positions' logits (generation needs the last one).
        return_logits=False: the loss is computed in chunks without materialising the logits.
        output_router_logits (MoE; default ``config.output_router_logits``): return each sparse
        block's router logits and the load-balancing ``aux_loss``; with labels, ``.loss`` is the
        cross-entropy + router_aux_loss_coef * aux_loss (+ router_z_loss_coef * z_loss), as in
        transformers' ``Qwen2MoeForCausalLM``.
        """
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        router_logits = [] if (output_router_logits and self.config.is_moe) else None
        h, hidden_states = self.model(input_ids, attention_mask, position_ids, cache,
                                      output_hidden_states, router_logits)
        out = CausalLMOutput(hidden_states=hidden_states)
        if labels is not None and not return_logits:
            out.loss = chunked_lm_loss(h, self.lm_head.weight, labels)
        else:
            if logits_to_keep:
                h = h[:, -logits_to_keep:]
            out.logits = self.lm_head(h)
            out.loss = causal_lm_loss(out.logits, labels) if labels is not None else None
        if router_logits is not None:
            self._add_router_losses(out, tuple(router_logits), attention_mask, input_ids.shape[1])
        return out

    def _add_router_losses(self, out: CausalLMOutput, router_logits, attention_mask, T: int):
        cfg = self.config
        if attention_mask is not None:
            attention_mask = attention_mask[:, -T:]  # the new tokens' mask (after a cache)
        out.router_logits = router_logits
        out.aux_loss = load_balancing_loss(router_logits, cfg.num_experts,
                                           cfg.num_experts_per_tok, attention_mask)
        if cfg.router_z_loss_coef:
            out.z_loss = router_z_loss(router_logits, attention_mask)
        if out.loss is not None:
            out.loss = out.loss + cfg.router_aux_loss_coef * out.aux_loss
            if out.z_loss is not None:
                out.loss = out.loss + cfg.router_z_loss_coef * out.z_loss
