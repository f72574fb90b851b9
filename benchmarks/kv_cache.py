"""What the KV cache buys: qwenlab.generate with and without it, 512 new tokens.

Without the cache every step re-runs the whole sequence (O(n^2) for n tokens); with it each
step processes one token (O(n)). Benchmark model (hidden 256, 4 layers), batch 1, float32,
8-token prompt. Goal: >= 5x faster with the cache. Also checks both give the same tokens.
"""

from _common import compare, ensure_malloc_settings, paired_models, versions

ensure_malloc_settings()

import torch  # noqa: E402

import qwenlab  # noqa: E402

PROMPT, NEW = 8, 512


def main() -> None:
    _, model = paired_models()
    model.eval()
    prompt = torch.randint(0, 8192, (1, PROMPT), generator=torch.Generator().manual_seed(0))

    def with_cache():
        return qwenlab.generate(model, prompt, NEW, use_cache=True)

    def without_cache():
        return qwenlab.generate(model, prompt, NEW, use_cache=False)

    same = torch.equal(with_cache(), without_cache())
    t = compare({"with cache": with_cache, "without cache": without_cache}, repeats=3, warmup=1)
    print(versions())
    for name, seconds in t.items():
        print(f"{name:>14}: {seconds:6.2f} s for {NEW} tokens  ({NEW / seconds:7.1f} tokens/s)")
    print(f"same tokens: {same}")
    print(f"speed-up from the cache: {t['without cache'] / t['with cache']:.1f}x  (goal >= 5x)")


if __name__ == "__main__":
    main()
