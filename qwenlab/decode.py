"""Inference steps: prefill the prompt into a KV cache, then decode one token at a time.

``prefill`` runs the prompt through the ordinary forward pass. ``decode_step`` then feeds one
new token per row. It computes exactly what ``QwenForCausalLM.forward`` computes for that token
(the tests hold it to the full forward pass and to transformers), but it is written for the one
case where Python overhead, not arithmetic, is the cost: a single position per row, when
each matrix product is a tiny matrix-vector product and a step launches a few dozen ops.
What it saves, and why:
- q, k and v come from one matrix product with the three weights concatenated (prepared once
  per ``generate`` call);
- RoPE rotates q and k in one pass, with rotate_half written as a roll;
- the G query heads that share a KV head are folded into one (G, D) block, so attention reads
  each cached K/V once and never repeats it (the grouped matmul of GQA);
- no mask is built: every cached position is visible to the newest token, except pads;
- residual adds ride along in ``addmm``, and module calls give way to plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import get_backend
from .kv_cache import KVCache
from .mlp import MLP


@dataclass
class DecodeState:
    logits: torch.Tensor                   # (B, V): the next-token logits of every row
    cache: KVCache | None                  # None: recompute everything each step
    attention_mask: torch.Tensor | None    # (B, S): 1 = real token; None = no padding
    next_position: torch.Tensor            # (B,): position id the next token will have
    fused_qkv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (W^T, bias)


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_len: int,
            use_cache: bool = True) -> DecodeState:
    B, P = input_ids.shape
    cache = KVCache(model.config, B, max_len, dtype=model.dtype, device=input_ids.device) \
        if use_cache else None
    out = model(input_ids, attention_mask=attention_mask, cache=cache, logits_to_keep=1)
    if attention_mask is None:
        next_position = torch.full((B,), P, dtype=torch.long, device=input_ids.device)
    else:
        next_position = attention_mask.long().sum(-1)
    fused = [fuse_qkv(layer.self_attn) for layer in model.model.layers] if use_cache else None
    return DecodeState(out.logits[:, -1], cache, attention_mask, next_position, fused)


def fuse_qkv(attn) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_qkv^T (C, (H + 2 Hkv) D), b_qkv): q, k and v projections as one matrix product."""
    weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    return weight.t(), bias


def decode_step(model, state: DecodeState, new_tokens: torch.Tensor, all_tokens: torch.Tensor
                ) -> None:
    """Advance ``state`` by the tokens just chosen: new_tokens (B,), all_tokens (B, S) so far."""
    if state.attention_mask is not None:
        ones = state.attention_mask.new_ones(state.attention_mask.shape[0], 1)
        state.attention_mask = torch.cat([state.attention_mask, ones], dim=1)
    if state.cache is None:  # no cache: the whole sequence again, O(S) work per token
        out = model(all_tokens, attention_mask=state.attention_mask, logits_to_keep=1)
        state.logits = out.logits[:, -1]
    else:
        state.logits = _one_token_forward(model, state, new_tokens)
    state.next_position += 1


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        return norm(x)  # keeps the float32 upcast of RMSNorm.forward
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


def _mlp_residual(mlp, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h + mlp(x), with the add fused into the last matrix product when mlp is SwiGLU."""
    if not isinstance(mlp, MLP):
        return h + mlp(x)
    gated = F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)
    return torch.addmm(h, gated, mlp.down_proj.weight.t())


def _one_token_forward(model, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) of one new token per row, tokens (B,), reading and extending the cache."""
    cfg, cache = model.config, state.cache
    B, H, Hkv, D = tokens.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    G = H // Hkv
    rope = model.model.rotary_emb
    cos, sin = rope(state.next_position, num_positions=cache.length + 1)  # (B, D)
    cos, sin = cos[:, None, :].to(model.dtype), sin[:, None, :].to(model.dtype)  # (B, 1, D)
    # rotate_half(x) * sin == roll(x, D/2) * (-sin1, sin2): two ops fewer in every layer
    sin_signed = torch.cat([-sin[..., :D // 2], sin[..., D // 2:]], dim=-1)
    key_mask = None
    if state.attention_mask is not None:
        key_mask = state.attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    backend = get_backend(cfg.attn_backend, tokens.device)

    h = F.embedding(tokens, model.model.embed_tokens.weight)  # (B, C)
    for layer, (w_qkv, b_qkv) in zip(model.model.layers, state.fused_qkv, strict=True):
        attn = layer.self_attn
        qkv = torch.addmm(b_qkv, _rms_norm(layer.input_layernorm, h), w_qkv)  # (B, (H+2Hkv)D)
        qk = qkv[:, :(H + Hkv) * D].view(B, H + Hkv, D)
        qk = torch.addcmul(qk * cos, qk.roll(D // 2, dims=-1), sin_signed)  # RoPE, q and k at once
        q = qk[:, :H].view(B, Hkv, G, D)                        # query heads folded by KV group
        k = qk[:, H:, None, :]                                  # (B, Hkv, 1, D)
        v = qkv[:, (H + Hkv) * D:].view(B, Hkv, 1, D)
        k_all, v_all = cache.update(attn.layer_idx, k, v)       # (B, Hkv, S, D)
        out = backend.attend_decode(q, k_all, v_all, key_mask, attn.scaling)  # (B, Hkv, G, D)
        h = torch.addmm(h, out.reshape(B, H * D), attn.o_proj.weight.t())     # h + o_proj(out)
        h = _mlp_residual(layer.mlp, h, _rms_norm(layer.post_attention_layernorm, h))
    cache.advance(1)
    return F.linear(_rms_norm(model.model.norm, h), model.lm_head.weight)  # (B, V)
