"""Graders for the exercises of chapter 05: the decoder, its size, and how it picks tokens.

- ``check_decoder_block(fn)``: fn(block, h (B, T, C), cos, sin) -> (B, T, C), one pre-norm
  Qwen2.5 block written from the parts of a ``qwenlab.model.DecoderBlock``
  (``input_layernorm``, ``self_attn(x, cos, sin)``, ``post_attention_layernorm``, ``mlp``).
- ``check_param_count(fn)``: fn(config: QwenConfig) -> int, the number of distinct parameters,
  for every Qwen2.5 size and a few toy configs (``QwenForCausalLM.num_parameters()``).
- ``check_sampling_probs(fn)``: fn(logits (V,), temperature, top_p) -> (V,) the distribution
  that sampling draws from: logits / temperature, cut to the top-p nucleus, renormalised
  (``qwenlab.generate.sample_next``).

Each trial runs the learner's function on seeded inputs, compares it with the library, and
when it is wrong, recomputes the typical wrong answers to name the mistake.
"""

from __future__ import annotations

import numbers

import torch

from ._grading import compare, first_match, grade

__all__ = ["check_decoder_block", "check_param_count", "check_sampling_probs"]


# --------------------------------------------------------------------------- decoder block

def _block_inputs(seed: int = 0):
    """A DecoderBlock whose every weight is random (norm gains and biases too, so skipping or
    swapping one shows), an input that is not unit-RMS (so a missing norm shows), and RoPE."""
    from ..config import QwenConfig
    from ..model import DecoderBlock
    from ..rope import RotaryEmbedding

    cfg = QwenConfig.tiny(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                          attn_backend="eager")
    gen = torch.Generator().manual_seed(seed)
    block = DecoderBlock(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.3 * noise if "norm" in name else 0.3 * noise)
    h = 3.0 * torch.randn(2, 6, cfg.hidden_size, generator=gen) + 0.5  # (B, T, C)
    rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, 16)
    cos, sin = rope(torch.arange(6)[None], num_positions=6)          # (1, T, D)
    return block, h, cos, sin


def _block_mistakes(block, h, cos, sin) -> dict[str, torch.Tensor]:
    n1, attn = block.input_layernorm, lambda x: block.self_attn(x, cos, sin)
    n2, mlp = block.post_attention_layernorm, block.mlp
    h1 = h + attn(n1(h))
    post = n1(h + attn(h))
    x1 = n1(h)
    x2 = n2(x1 + attn(x1))
    no_attn_res = attn(n1(h))
    mlp_first = h + mlp(n2(h))
    return {
        "this is post-norm (the original Transformer): norm(h + sublayer(h)). Qwen2.5 is "
        "pre-norm: h + sublayer(norm(h)), so the residual stream itself is never normalised":
            n2(post + mlp(post)),
        "the attention sub-layer has no residual: h = attn(norm(h)) throws the input away; "
        "add it back: h = h + attn(norm(h))":
            no_attn_res + mlp(n2(no_attn_res)),
        "the MLP sub-layer has no residual: return h + mlp(norm(h)), not mlp(norm(h))":
            mlp(n2(h1)),
        "the residual adds the normalised input: x = norm(h); h = x + attn(x). The skip path "
        "must carry the raw h: h = h + attn(norm(h)) (the norm feeds only the sub-layer)":
            x2 + mlp(x2),
        "you normalised after the residual sum: norm(h + attn(norm(h))). In pre-norm the sum "
        "stays unnormalised; the next norm sits inside the MLP branch only":
            n2(h1) + mlp(n2(h1)),
        "both sub-layers read the same input h (a parallel block, as in GPT-J): in Qwen2.5 the "
        "MLP reads the output of the attention step, h1 = h + attn(norm1(h))":
            h1 + mlp(n2(h)),
        "the same norm is used twice: the MLP branch has its own, post_attention_layernorm":
            h1 + mlp(n1(h1)),
        "the MLP runs before attention: attention comes first, then the MLP":
            mlp_first + attn(n1(mlp_first)),
    }


def check_decoder_block(fn):
    """fn(block, h, cos, sin) -> (B, T, C): the output of one pre-norm Qwen2.5 block."""
    def trial(fn):
        block, h, cos, sin = _block_inputs()
        with torch.no_grad():
            expected = block(h, cos, sin)
            actual = fn(block, h.clone(), cos, sin)
            if not isinstance(actual, torch.Tensor):
                return f"return a torch.Tensor (B, T, C), got {type(actual).__name__}"
            if compare(actual, expected, "block output", atol=1e-5, rtol=1e-5) is None:
                return None
            return first_match(actual, _block_mistakes(block, h, cos, sin)) or \
                compare(actual, expected, "block output", atol=1e-5, rtol=1e-5)

    return grade(
        "decoder_block", fn, trial,
        hint="pre-norm: h + sublayer(norm(h)), twice. First attention "
             "(block.self_attn(x, cos, sin) after block.input_layernorm), then the MLP after "
             "its own norm, block.post_attention_layernorm",
        success="your pre-norm block equals qwenlab.model.DecoderBlock (random weights, "
                "norm gains and biases, 2 x 6 tokens)")


# --------------------------------------------------------------------------- parameter count

def _count(cfg, *, tied_twice=False, untied_once=False, qkv_bias=True, mha_kv=False,
           norms=True, final_norm=True, mlp_mats=3, o_bias=False) -> int:
    """The parameter formula, with switches that reproduce the typical mistakes."""
    h, V, L, i = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = (cfg.num_attention_heads if mha_kv else cfg.num_key_value_heads) * cfg.head_dim
    vocab_matrices = 1 if cfg.tie_word_embeddings else 2   # the embedding, and an untied head
    if (tied_twice and cfg.tie_word_embeddings) or (untied_once and not cfg.tie_word_embeddings):
        vocab_matrices = 3 - vocab_matrices
    attn = h * h + 2 * h * kv + h * h + ((h + 2 * kv) if qkv_bias else 0) + (h if o_bias else 0)
    layer = attn + mlp_mats * h * i + (2 * h if norms else 0)
    return vocab_matrices * V * h + L * layer + (h if norms and final_norm else 0)


def count_parameters(cfg) -> int:
    """Distinct parameters of ``QwenForCausalLM(cfg)`` from the config alone."""
    return _count(cfg)


def _param_configs():
    from ..config import PRESETS, QwenConfig

    return [QwenConfig.preset(name) for name in PRESETS] + [
        QwenConfig.tiny(),
        QwenConfig.tiny(tie_word_embeddings=False, num_key_value_heads=1, vocab_size=100),
    ]


_PARAM_MISTAKES = {
    "the tied LM head is counted twice: Qwen2.5-0.5B/1.5B/3B share one V x h matrix between "
    "the embedding and the head (tie_word_embeddings=True), so count it once":
        dict(tied_twice=True),
    "untied models (7B and up, tie_word_embeddings=False) have a separate LM head: add "
    "another vocab_size x hidden_size":
        dict(untied_once=True),
    "the q, k and v biases are missing: Qwen2.5's q/k/v projections have biases "
    "(hidden + 2 x kv_heads x head_dim per layer)":
        dict(qkv_bias=False),
    "k_proj and v_proj are sized with num_attention_heads: with grouped-query attention they "
    "produce num_key_value_heads x head_dim outputs each":
        dict(mha_kv=True),
    "the RMSNorm weights are missing: 2 x hidden per layer (input_layernorm and "
    "post_attention_layernorm) plus hidden for the final norm":
        dict(norms=False),
    "the final norm (model.norm, hidden weights) before the LM head is missing":
        dict(final_norm=False),
    "the MLP has three matrices in SwiGLU (gate_proj, up_proj, down_proj), 3 x hidden x "
    "intermediate, not two":
        dict(mlp_mats=2),
    "o_proj has no bias in Qwen2.5 (only q, k and v do)":
        dict(o_bias=True),
}


def check_param_count(fn):
    """fn(config) -> int: the number of distinct parameters of ``QwenForCausalLM(config)``."""
    def trial(fn):
        configs = _param_configs()
        answers = []
        for cfg in configs:
            n = fn(cfg)
            if isinstance(n, torch.Tensor) and n.numel() == 1 and not n.is_floating_point():
                n = n.item()
            if not isinstance(n, numbers.Integral) or isinstance(n, bool):
                return f"return the count as an int, got {type(n).__name__} {n!r}"
            answers.append(int(n))
        expected = [count_parameters(cfg) for cfg in configs]
        if answers == expected:
            return None
        for diagnosis, switches in _PARAM_MISTAKES.items():
            wrong = [_count(cfg, **switches) for cfg in configs]
            if answers == wrong:
                return diagnosis
        first_bad = next(k for k, (a, e) in enumerate(zip(answers, expected, strict=True))
                         if a != e)
        cfg = configs[first_bad]
        name = f"Qwen2.5 preset {first_bad}" if first_bad < 7 else "a toy config"
        return (f"for {name} (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
                f"vocab {cfg.vocab_size:,}, tied={cfg.tie_word_embeddings}) you counted "
                f"{answers[first_bad]:,}; the model has {expected[first_bad]:,} "
                f"({answers[first_bad] - expected[first_bad]:+,})")

    return grade(
        "param_count", fn, trial,
        hint="embeddings V*h (+ V*h for an untied head); per layer: q h*h + h, k and v "
             "h*kv*d + kv*d each, o h*h, MLP 3*h*i, two norms 2*h; final norm h",
        success="your formula matches QwenForCausalLM.num_parameters() for all 7 Qwen2.5 "
                "sizes (0.49B to 72.7B) and 2 toy configs")


# --------------------------------------------------------------------------- sampling

_SAMPLING_SETTINGS = [(1.0, 1.0), (0.5, 0.9), (2.0, 0.6), (0.7, 0.8), (1.3, 0.95)]


def _sampling_logits() -> torch.Tensor:
    return 2.0 * torch.randn(40, generator=torch.Generator().manual_seed(5))  # (V,)


def reference_sampling_probs(logits: torch.Tensor, temperature: float, top_p: float):
    """What ``qwenlab.generate.sample_next`` samples from, for one row of logits."""
    from ..generate import top_p_filter

    scaled = logits.float()[None] / temperature                    # (1, V)
    return torch.softmax(top_p_filter(scaled, top_p), dim=-1)[0]


def _nucleus_keep(probs: torch.Tensor, top_p: float, include_crossing: bool = True):
    sorted_p, order = probs.sort(descending=True)
    cum = sorted_p.cumsum(0)
    keep_sorted = (cum - sorted_p) < top_p if include_crossing else cum <= top_p
    keep_sorted[0] = True
    return keep_sorted.scatter(0, order, keep_sorted)


def _sampling_mistakes(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    def run(variant):
        return torch.stack([variant(t, p) for t, p in _SAMPLING_SETTINGS])

    def times_t(t, p):
        return reference_sampling_probs(logits * t * t, t, p)     # logits * t overall

    def nucleus_first(t, p):
        keep = _nucleus_keep(logits.softmax(-1), p)
        return (logits / t).masked_fill(~keep, float("-inf")).softmax(-1)

    def drops_crossing(t, p):
        probs = (logits / t).softmax(-1)
        keep = _nucleus_keep(probs, p, include_crossing=False)
        return (logits / t).masked_fill(~keep, float("-inf")).softmax(-1)

    def not_renormalised(t, p):
        probs = (logits / t).softmax(-1)
        return probs * _nucleus_keep(probs, p)

    def no_temperature(t, p):
        return reference_sampling_probs(logits, 1.0, p)

    return {
        "the logits are multiplied by the temperature; divide them: a temperature below 1 "
        "must sharpen the distribution (logits / T)": run(times_t),
        "the nucleus is chosen before the temperature is applied: divide the logits by the "
        "temperature first, then keep the top-p set of the tempered distribution": run(
            nucleus_first),
        "the token that crosses top_p is dropped: keep every token whose more likely "
        "neighbours hold less than top_p (cumulative mass *before* it < top_p), so the kept "
        "set holds at least top_p": run(drops_crossing),
        "the kept probabilities are not renormalised: after cutting to the nucleus, softmax "
        "again (or divide by their sum) so they add up to 1": run(not_renormalised),
        "the temperature is ignored: divide the logits by it before the softmax": run(
            no_temperature),
    }


def check_sampling_probs(fn):
    """fn(logits (V,), temperature, top_p) -> (V,): the distribution that sampling draws from."""
    def trial(fn):
        logits = _sampling_logits()
        outputs = []
        for t, p in _SAMPLING_SETTINGS:
            out = fn(logits.clone(), t, p)
            if not isinstance(out, torch.Tensor):
                return f"return a torch.Tensor of probabilities (V,), got {type(out).__name__}"
            if out.shape != logits.shape:
                return f"the probabilities have shape {tuple(out.shape)}, expected (40,)"
            outputs.append(out.float())
        actual = torch.stack(outputs)                                   # (settings, V)
        expected = torch.stack([reference_sampling_probs(logits, t, p)
                                for t, p in _SAMPLING_SETTINGS])
        if compare(actual, expected, "probabilities", atol=1e-6, rtol=1e-5) is None:
            return None
        return first_match(actual, _sampling_mistakes(logits), atol=1e-6) or \
            compare(actual, expected, "probabilities", atol=1e-6, rtol=1e-5)

    return grade(
        "sampling_probs", fn, trial,
        hint="softmax(logits / temperature); sort it; keep each token whose more likely "
             "tokens hold less than top_p in total; zero the rest and renormalise",
        success="your distribution equals what qwenlab.generate samples from, for 5 "
                "temperature / top-p settings")
