"""Greedy generation speed: qwenlab.generate vs transformers' generate, same weights.

256 new tokens after a 32-token prompt, batch 1, float32, on the benchmark model (hidden 256,
4 layers, 8 heads / 2 KV heads, vocab 8192). Goal: qwenlab >= 2x transformers' tokens/s.
Also checks that both produce the same tokens.
"""

from _common import compare, ensure_malloc_settings, paired_models, versions

ensure_malloc_settings()

import torch  # noqa: E402

import qwenlab  # noqa: E402

PROMPT, NEW = 32, 256


def main() -> None:
    reference, ours = paired_models()
    reference.eval(), ours.eval()
    prompt = torch.randint(0, 8192, (1, PROMPT), generator=torch.Generator().manual_seed(0))

    def run_reference():
        with torch.inference_mode():
            return reference.generate(prompt, max_new_tokens=NEW,
                                      do_sample=False)

    def run_ours():
        return qwenlab.generate(ours, prompt, NEW, temperature=0.0)

    same = torch.equal(run_reference(), run_ours())
    t = compare({"transformers": run_reference, "qwenlab": run_ours}, repeats=7)
    print(versions())
    for name, seconds in t.items():
        print(f"{name:>12}: {seconds * 1e3 / NEW:6.3f} ms/token  {NEW / seconds:7.1f} tokens/s")
    print(f"same tokens: {same}")
    print(f"speed-up (qwenlab tokens/s / transformers tokens/s): "
          f"{t['transformers'] / t['qwenlab']:.2f}x  (goal >= 2.0x)")


if __name__ == "__main__":
    main()
