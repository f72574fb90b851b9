"""Autoregressive generation: prefill the prompt once, then one token per step from the cache.

    prefill: the whole prompt through the model, filling the KV cache; logits of the last token
    decode:  pick a token, feed only it (one position), read the next logits, repeat

Picking a token: ``temperature=0`` takes the argmax (greedy, deterministic). Otherwise logits
are divided by the temperature (below 1 sharpens, above 1 flattens), optionally cut to the
``top_k`` most likely tokens and to the smallest set whose probability reaches ``top_p``
(nucleus sampling), and sampled. A ``seed`` or ``generator`` makes sampling repeatable.

Batches of prompts of different lengths are left-padded (``attention_mask`` 0 on the pads), so
every row's next token sits in the same, last, column. A row stops at ``eos_token_id``; its
remaining columns are filled with ``pad_token_id``.
"""

from __future__ import annotations

import torch

from .decode import decode_step, prefill


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]           # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens whose probabilities sum to at least top_p; mask the rest."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs     # probability of all more likely tokens
    drop_sorted = mass_before >= top_p             # the top token has mass_before 0: always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             attention_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
             seed: int | None = None, use_cache: bool = True, on_token=None) -> torch.Tensor:
    """The prompt (B, P) followed by up to ``max_new_tokens`` new tokens: (B, P + n).

    eos_token_id: defaults to ``model.config.eos_token_id``; pass -1 to never stop early.
    on_token: called with each step's new tokens (B,) as they are chosen (for streaming).
    use_cache=False recomputes the whole sequence at every step (to measure what the cache buys).
    """
    with torch.inference_mode():
        tokens = _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p,
                           eos_token_id, pad_token_id, attention_mask, generator, seed,
                           use_cache, on_token)
    # A plain tensor again (inference-mode tensors cannot enter autograd), so generated
    # samples can be trained on, as on-policy post-training does.
    return tokens.clone()


def _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id,
              pad_token_id, attention_mask, generator, seed, use_cache, on_token):
    if input_ids.dim() != 2:
        raise ValueError("input_ids must be (batch, prompt_len), "
                         f"got shape {tuple(input_ids.shape)}")
    if eos_token_id is None:
        eos_token_id = model.config.eos_token_id
    stop_ids = _as_id_tensor(eos_token_id, input_ids.device)
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id
    if pad_token_id is None:
        pad_token_id = int(stop_ids[0]) if len(stop_ids) else 0
    if generator is None and seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: the fast, mask-free path

    B, P = input_ids.shape
    tokens = torch.full((B, P + max_new_tokens), pad_token_id, dtype=input_ids.dtype,
                        device=input_ids.device)
    tokens[:, :P] = input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    if max_new_tokens <= 0:
        return tokens[:, :P]

    state = prefill(model, input_ids, attention_mask, max_len=P + max_new_tokens,
                    use_cache=use_cache)
    for step in range(max_new_tokens):
        next_tokens = sample_next(state.logits, temperature, top_k, top_p, generator)
        if len(stop_ids):  # rows that have stopped emit padding
            next_tokens = next_tokens.masked_fill(finished, pad_token_id)
        tokens[:, P + step] = next_tokens
        if on_token is not None:
            on_token(next_tokens)
        if len(stop_ids):
            finished |= torch.isin(next_tokens, stop_ids)
            if bool(finished.all()):
                return tokens[:, :P + step + 1]
        if step + 1 < max_new_tokens:
            decode_step(model, state, next_tokens, tokens[:, :P + step + 1])
    return tokens


def _as_id_tensor(ids, device) -> torch.Tensor:
    if ids is None or ids == -1:
        return torch.empty(0, dtype=torch.long, device=device)
    ids = [ids] if isinstance(ids, int) else list(ids)
    return torch.tensor(ids, dtype=torch.long, device=device)
