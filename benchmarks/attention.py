"""Attention speed on a CUDA GPU: qwenlab's Triton kernel vs torch sdpa (flash) vs eager.

FLOP accounting (as in Triton's fused-attention tutorial): a forward pass is two matrix
products, Q K^T and P V, of 2*B*H*T^2*d FLOPs each, so 4*B*H*T^2*d; causal attention skips the
masked half (x0.5); the backward pass costs 2.5x the forward (five products instead of two).
TFLOP/s = FLOPs / median time. Shapes: bf16, causal, T = 512 ... 16384 with B*T = 16384 tokens
per step, head_dim 64 and 128, grouped-query attention 7:1 and 8:1:

    d=64,  28 heads / 4 KV heads (7:1)      d=128, 28 heads / 4 KV heads (7:1, Qwen2.5-7B)
    d=64,  32 heads / 4 KV heads (8:1)      d=128, 64 heads / 8 KV heads (8:1, Qwen2.5-72B)

A decode section times one new token against a KV cache of S tokens (the split-K kernel vs
sdpa), reporting the bandwidth achieved reading K and V, which is what bounds decoding.

Results go to benchmarks/results/attention_<gpu-name>.json with the GPU name and versions;
chapter 06 shows them. Without a CUDA GPU this prints that and exits 0: nothing is measured.

    python benchmarks/attention.py            # everything (a few minutes on an H100)
    python benchmarks/attention.py --quick    # T in {1024, 4096}, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [  # (label, heads, kv_heads, head_dim)
    ("d64 gqa7:1", 28, 4, 64),
    ("d64 gqa8:1", 32, 4, 64),
    ("d128 gqa7:1 (7B)", 28, 4, 128),
    ("d128 gqa8:1 (72B)", 64, 8, 128),
]
LENGTHS = [512, 1024, 2048, 4096, 8192, 16384]
TOKENS_PER_STEP = 16384
EAGER_MAX_BYTES = 16 * 2**30  # eager materialises (B, H, T, T) scores: skip it past this


def attention_flops(B, H, T, d, causal=True, backward=False) -> float:
    flops = 2 * (2 * B * H * T * T * d)
    if causal:
        flops *= 0.5
    return flops * 2.5 if backward else flops


def gpu_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def versions() -> dict[str, str]:
    import triton

    return {"python": platform.python_version(), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": str(torch.version.cuda)}


def providers(H, Hkv):
    """name -> attention(q, k, v) for bf16 (B, H, T, d) q and (B, Hkv, T, d) k, v, causal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from qwenlab.attention import eager_attention
    from qwenlab.kernels import flash_attn

    group = H // Hkv

    def sdpa_flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            try:
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, enable_gqa=True)
            except (RuntimeError, TypeError):  # no GQA in this flash build: repeat K/V
                k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    def eager(q, k, v):
        return eager_attention(q, k, v, None, q.shape[-1] ** -0.5)

    return {"triton": lambda q, k, v: flash_attn(q, k, v, causal=True),
            "sdpa-flash": sdpa_flash, "eager": eager}


def time_ms(fn, grad_to_none=None) -> float:
    """Median milliseconds per call (triton's do_bench: flushes L2, reports the median)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                   return_mode="median")


def measure(fn, q, k, v, dout, reference) -> dict:
    """Forward and backward times of one provider, and its distance from sdpa's output."""
    B, H, T, d = q.shape
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    out = fn(qg, kg, vg)
    diff = (out.float() - reference.float()).abs().max().item()
    fwd = time_ms(lambda: fn(q, k, v))
    bwd = time_ms(lambda: out.backward(dout, retain_graph=True), grad_to_none=[qg, kg, vg])
    return dict(max_abs_diff_vs_sdpa=diff, fwd_ms=fwd, bwd_ms=bwd,
                fwd_tflops=attention_flops(B, H, T, d) / fwd * 1e-9,
                bwd_tflops=attention_flops(B, H, T, d, backward=True) / bwd * 1e-9)


def bench_training(lengths, dtype) -> list[dict]:
    rows = []
    for label, H, Hkv, d in SHAPES:
        fns = providers(H, Hkv)
        for T in lengths:
            B = max(1, TOKENS_PER_STEP // T)
            gen = torch.Generator(device="cuda").manual_seed(0)
            q = torch.randn(B, H, T, d, device="cuda", dtype=dtype, generator=gen)
            k = torch.randn(B, Hkv, T, d, device="cuda", dtype=dtype, generator=gen)
            v = torch.randn(B, Hkv, T, d, device="cuda", dtype=dtype, generator=gen)
            dout = torch.randn_like(q)
            reference = fns["sdpa-flash"](q, k, v)
            for name, fn in fns.items():
                row = dict(shape=label, B=B, H=H, H_kv=Hkv, T=T, d=d, provider=name)
                if name == "eager" and B * H * T * T * 8 > EAGER_MAX_BYTES:
                    row["skipped"] = "eager's score matrices would not fit the memory budget"
                    rows.append(row)
                    print(format_row(row), flush=True)
                    continue
                try:
                    row.update(measure(fn, q, k, v, dout, reference))
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                torch.cuda.empty_cache()
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def bench_decode(lengths, dtype) -> list[dict]:
    """One token, Qwen2.5-7B's attention (28 heads, 4 KV heads, d=128), batch 1 and 8."""
    from qwenlab.attention import sdpa_attention_decode
    from qwenlab.kernels import flash_attn_decode

    Hkv, G, d = 4, 7, 128
    rows = []
    for B in (1, 8):
        for S in lengths:
            gen = torch.Generator(device="cuda").manual_seed(0)
            cache = torch.randn(2, B, Hkv, S + 64, d, device="cuda", dtype=dtype, generator=gen)
            k, v = cache[0, :, :, :S], cache[1, :, :, :S]   # strided views, as in a KV cache
            q = torch.randn(B, Hkv, G, d, device="cuda", dtype=dtype, generator=gen)
            kv_bytes = 2 * B * Hkv * S * d * cache.element_size()
            for name, fn in {"triton": lambda: flash_attn_decode(q, k, v, None, d ** -0.5),
                             "sdpa": lambda: sdpa_attention_decode(q, k, v, None, d ** -0.5)
                             }.items():
                ms = time_ms(fn)
                row = dict(B=B, S=S, H=Hkv * G, H_kv=Hkv, d=d, provider=name, ms=ms,
                           kv_gbytes_per_s=kv_bytes / ms * 1e-6)
                rows.append(row)
                print(f"decode B={B:<2} S={S:<6} {name:<7} {ms * 1e3:8.1f} us "
                      f"{row['kv_gbytes_per_s']:7.0f} GB/s of K/V", flush=True)
    return rows


def format_row(row) -> str:
    head = f"{row['shape']:<18} T={row['T']:<6} B={row['B']:<3} {row['provider']:<10}"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    return (f"{head} fwd {row['fwd_ms']:8.3f} ms {row['fwd_tflops']:6.1f} TFLOP/s   "
            f"bwd {row['bwd_ms']:8.3f} ms {row['bwd_tflops']:6.1f} TFLOP/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T in {1024, 4096} only")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode section")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("No CUDA GPU here: this benchmark times GPU kernels, so nothing was measured "
              "(and no results were written).")
        return 0
    try:
        import triton  # noqa: F401
    except ImportError:
        print("triton is not installed (pip install triton): nothing was measured.")
        return 0
    from qwenlab.kernels import flash_attention

    if flash_attention.INTERPRETED:
        print("TRITON_INTERPRET is set: the kernels would run in the CPU interpreter. "
              "Unset it to benchmark the GPU.")
        return 0
    props = torch.cuda.get_device_properties(0)
    if torch.cuda.get_device_capability(0) < (8, 0):
        print(f"{props.name} has compute capability {props.major}.{props.minor}; the kernel "
              "needs 8.0 or newer (bf16 tensor cores). Nothing was measured.")
        return 0

    lengths = [1024, 4096] if args.quick else LENGTHS
    info = {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count, **versions(),
            "dtype": "bf16", "causal": True, "tokens_per_step": TOKENS_PER_STEP,
            "flops": "fwd 4*B*H*T^2*d * 0.5 (causal); bwd 2.5x fwd",
            "date": time.strftime("%Y-%m-%d")}
    print(", ".join(f"{key} {value}" for key, value in info.items()))
    started = time.perf_counter()
    training = bench_training(lengths, torch.bfloat16)
    decode = [] if args.no_decode else bench_decode(lengths, torch.bfloat16)
    info["seconds"] = round(time.perf_counter() - started, 1)

    out = args.out or RESULTS / f"attention_{gpu_slug(props.name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**info, "training": training, "decode": decode}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
