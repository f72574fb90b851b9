"""Shared benchmark helpers: a fair, side-by-side timing of qwenlab against transformers.

Timing on a shared 2-core machine is noisy, so every benchmark
- runs both implementations in the same process, alternating, after a warm-up;
- reports medians and the ratio of medians, which drift much less than absolute times;
- raises glibc's mmap/trim thresholds (set before the process starts, so we re-exec once):
  otherwise large attention buffers are returned to the OS and faulted back in every step,
  which slows both sides by 2-3x and swamps the difference being measured.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def ensure_malloc_settings() -> None:
    if any(os.environ.get(k) != v for k, v in _MALLOC.items()):
        os.environ.update(_MALLOC)
        os.execv(sys.executable, [sys.executable, *sys.argv])


def bench_model_config():
    """The benchmark model: hidden 256, 4 layers, 8 heads, 2 KV heads, vocab 8192."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=8192, hidden_size=256, intermediate_size=688,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                       max_position_embeddings=2048, tie_word_embeddings=True,
                       bos_token_id=None, eos_token_id=None, pad_token_id=None)


def paired_models(seed: int = 0):
    """A transformers Qwen2 (sdpa) and a qwenlab model with the very same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwenlab import QwenConfig, QwenForCausalLM

    torch.manual_seed(seed)
    hf_config = bench_model_config()
    reference = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    ours = QwenForCausalLM(QwenConfig.from_hf(hf_config, attn_backend="sdpa"))
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def compare(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
            ) -> dict[str, float]:
    """Median seconds per call of each fn, measured in alternation."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def versions() -> str:
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, " \
           f"{torch.get_num_threads()} threads"
