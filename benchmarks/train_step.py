"""Training-step speed: qwenlab vs transformers' Qwen2ForCausalLM (sdpa), same weights.

One step = forward, loss, backward, AdamW update, on batch 8 x 256 tokens, float32, CPU, with
the benchmark model (hidden 256, 4 layers, 8 heads / 2 KV heads, vocab 8192).
qwenlab computes its loss with ``return_logits=False`` (the LM head and cross-entropy in chunks,
never holding the 8 x 256 x 8192 logits); the first step checks both losses agree.
Goal: qwenlab time / transformers time <= 1.0.
"""

from _common import compare, ensure_malloc_settings, paired_models, versions

ensure_malloc_settings()

import torch  # noqa: E402

BATCH, SEQ = 8, 256


def main() -> None:
    reference, ours = paired_models()
    reference.train(), ours.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 8192, (BATCH, SEQ), generator=g)

    with torch.no_grad():
        ref_loss = reference(ids, labels=ids).loss.item()
        our_loss = ours(ids, labels=ids, return_logits=False).loss.item()
    print(f"loss on the same batch: transformers {ref_loss:.6f}, qwenlab {our_loss:.6f}")

    opt_ref = torch.optim.AdamW(reference.parameters(), lr=1e-4)
    opt_our = torch.optim.AdamW(ours.parameters(), lr=1e-4)

    def step_reference():
        loss = reference(ids, labels=ids).loss
        loss.backward()
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)

    def step_ours():
        loss = ours(ids, labels=ids, return_logits=False).loss
        loss.backward()
        opt_our.step()
        opt_our.zero_grad(set_to_none=True)

    t = compare({"transformers": step_reference, "qwenlab": step_ours}, repeats=9, warmup=3)
    print(versions())
    tokens = BATCH * SEQ
    for name, seconds in t.items():
        print(f"{name:>12}: {seconds * 1e3:7.1f} ms/step  {tokens / seconds:8.0f} tokens/s")
    print(f"time ratio (qwenlab / transformers): {t['qwenlab'] / t['transformers']:.2f}  "
          f"(goal <= 1.0)")


if __name__ == "__main__":
    main()
