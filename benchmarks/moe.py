"""MoE block speed: qwenlab's sparse block vs a dense SwiGLU with the same active parameters.

Hidden 256 (the benchmark model's width), 2048 tokens (batch 8 x 256), float32, CPU.
- dense: qwenlab.mlp.MLP(256, 688), 3 x 256 x 688 weights, all used by every token;
- MoE: qwenlab.moe.SparseMoeBlock, 8 experts of width 172, top-2, a shared expert of width
  344: per token 344 + 2 x 172 = 688 wide, the dense MLP's active weights (plus the 8 x 256
  router and the 256-wide shared-expert gate), while holding 2.5x the dense MLP's weights;
- transformers: Qwen2MoeSparseMoeBlock with the same weights, for reference (as a standalone
  module it runs its eager loop over experts, and says so in a warning).
Both the forward pass alone and forward + backward are timed. Equal FLOPs per token, so the
tokens/s ratio (MoE / dense) is what the routing, gather/scatter and smaller matmuls cost.
"""

from _common import compare, ensure_malloc_settings, versions

ensure_malloc_settings()

import torch  # noqa: E402

HIDDEN, DENSE, EXPERTS, TOP_K, EXPERT, SHARED = 256, 688, 8, 2, 172, 344
BATCH, SEQ = 8, 256


def blocks():
    from transformers.models.qwen2_moe import modeling_qwen2_moe as hf_moe

    from qwenlab import QwenConfig
    from qwenlab.hf import unfuse_experts
    from qwenlab.mlp import MLP
    from qwenlab.moe import SparseMoeBlock

    torch.manual_seed(0)
    config = QwenConfig.tiny(hidden_size=HIDDEN, num_attention_heads=8, num_key_value_heads=2,
                             intermediate_size=DENSE, num_experts=EXPERTS,
                             num_experts_per_tok=TOP_K, moe_intermediate_size=EXPERT,
                             shared_expert_intermediate_size=SHARED)
    reference = hf_moe.Qwen2MoeSparseMoeBlock(config.to_hf())
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    ours = SparseMoeBlock(config)
    prefix = "model.layers.0.mlp."
    state = unfuse_experts({prefix + n: t for n, t in reference.state_dict().items()}, config)
    ours.load_state_dict({n.removeprefix(prefix): t for n, t in state.items()})
    dense = MLP(HIDDEN, DENSE)
    return dense, ours, reference


def main() -> None:
    dense, ours, reference = blocks()
    x = torch.randn(BATCH, SEQ, HIDDEN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    print(f"qwenlab MoE block vs transformers' on the same weights: max abs diff {diff:.1e}")
    active = sum(p.numel() for p in dense.parameters())
    held = sum(p.numel() for p in ours.parameters())
    print(f"dense MLP weights {active:,}; MoE block holds {held:,} ({held / active:.1f}x)")

    def forward(block):
        def run():
            with torch.no_grad():
                block(x)
        return run

    def train_step(block):
        xg = x.clone().requires_grad_(True)

        def run():
            block(xg).sum().backward()
        return run

    tokens = BATCH * SEQ
    print(versions())
    for label, make in (("forward", forward), ("forward + backward", train_step)):
        t = compare({"dense SwiGLU": make(dense), "qwenlab MoE": make(ours),
                     "transformers MoE": make(reference)}, repeats=15, warmup=3)
        print(f"{label}, {tokens} tokens:")
        for name, seconds in t.items():
            print(f"  {name:>16}: {seconds * 1e3:7.2f} ms  {tokens / seconds:9.0f} tokens/s")
        print(f"  tokens/s ratio, qwenlab MoE / dense: {t['dense SwiGLU'] / t['qwenlab MoE']:.2f}"
              f"   qwenlab MoE / transformers MoE: "
              f"{t['transformers MoE'] / t['qwenlab MoE']:.2f}")


if __name__ == "__main__":
    main()
