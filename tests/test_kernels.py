"""The Triton FlashAttention kernel equals eager attention: outputs, gradients, decode, model.

Without a GPU these run the kernels in Triton's interpreter on CPU tensors (tests/conftest.py
sets TRITON_INTERPRET=1 before anything imports triton). The interpreter is ~10^4x slower than
torch, so shapes are tiny and each case is chosen to cover something: lengths 1, 17, 40, 64 and
100 (tails of the 16-wide tiles), causal and not, KV groups 1, 2 and 7, fp16, bf16 and fp32.

With compiled kernels (a CUDA GPU and ``TRITON_INTERPRET=0``) the same tests run on the GPU.
The reference is ``qwenlab.attention.eager_attention`` on float32 copies of the same inputs.
Tolerances, relative to the largest reference value (at least 1):
- fp32: 1e-5. The kernel sums in a different order than torch; measured ~1e-6.
- fp16: 5e-3. P is rounded to fp16 before P @ V (as in every FlashAttention), and the results
  are stored in fp16 (unit roundoff 4.9e-4); measured ~1e-3.
- bf16: 4e-2. The same roundings with bf16's 8-bit mantissa (unit roundoff 3.9e-3); measured
  ~1.5e-2.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import qwenlab
from qwenlab import QwenConfig, QwenForCausalLM
from qwenlab.attention import attend, eager_attention, eager_attention_decode, resolve_backend
from qwenlab.kernels import backend, reference

fa = pytest.importorskip("qwenlab.kernels.flash_attention", reason="triton is not installed")

# interpreted kernels take CPU tensors; compiled ones, CUDA tensors
DEVICE = torch.device("cpu" if fa.INTERPRETED or not torch.cuda.is_available() else "cuda")
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def assert_close(actual, expected, tol, what):
    scale = max(1.0, expected.abs().max().item())
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol} x {scale:.3g}"


def random_qkv(B, H, Hkv, T, S, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(DEVICE, dtype)
    v = torch.randn(B, Hkv, S, D, generator=g).to(DEVICE, dtype)
    return q, k, v


def eager_reference(q, k, v, causal, dout=None):
    """fp32 eager attention on copies of q, k, v; with dout, also its gradients."""
    qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
    mask = None if causal else torch.ones(q.shape[2], k.shape[2], dtype=torch.bool,
                                          device=q.device)
    out = eager_attention(qf, kf, vf, mask, q.shape[-1] ** -0.5)
    if dout is None:
        return out.detach()
    return (out.detach(), *torch.autograd.grad(out, (qf, kf, vf), dout.float()))


# (B, H, Hkv, T, D, causal, dtype): together every length, group, mask kind and dtype
TRAINING_CASES = [
    (2, 4, 2, 17, 16, True, F32),
    (1, 7, 1, 40, 16, False, F16),
    (1, 2, 2, 64, 32, True, BF16),
    (1, 2, 1, 100, 16, True, F32),
    (2, 7, 1, 1, 16, True, F32),
    (1, 4, 2, 40, 32, False, BF16),
]


@pytest.mark.parametrize("B,H,Hkv,T,D,causal,dtype", TRAINING_CASES,
                         ids=lambda x: str(x).replace("torch.", ""))
def test_flash_attn_output_and_gradients_match_eager(B, H, Hkv, T, D, causal, dtype):
    q, k, v = random_qkv(B, H, Hkv, T, T, D, dtype)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    dout = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)

    out = fa.flash_attn(q, k, v, causal=causal)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    ref_out, ref_dq, ref_dk, ref_dv = eager_reference(q, k, v, causal, dout)

    assert out.dtype == dtype and dk.shape == k.shape  # GQA: dk summed over the group
    for name, a, e in [("out", out, ref_out), ("dq", dq, ref_dq), ("dk", dk, ref_dk),
                       ("dv", dv, ref_dv)]:
        assert_close(a, e, TOL[dtype], name)


@pytest.mark.parametrize("T,S,causal,dtype", [(17, 40, True, BF16), (1, 33, True, F32),
                                              (40, 100, False, F16)])
def test_flash_attn_chunk_after_cached_prefix_matches_eager(T, S, causal, dtype):
    # T < S: the T queries are the last T positions, so query t sees keys 0..S - T + t
    q, k, v = (x.requires_grad_() for x in random_qkv(1, 4, 2, T, S, 16, dtype))
    dout = torch.randn(1, 4, T, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    out = fa.flash_attn(q, k, v, causal=causal)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    expected = eager_reference(q, k, v, causal, dout)
    for name, a, e in zip(("out", "dq", "dk", "dv"), (out, *grads), expected, strict=True):
        assert_close(a, e, TOL[dtype], name)


def test_flash_attn_reads_strided_views_without_copies():
    # q as Attention.forward makes it (a transpose), k/v as slices of a preallocated cache
    q_btd = torch.randn(1, 20, 4, 16, device=DEVICE).transpose(1, 2)  # (B, H, T, D), strided
    cache = torch.randn(2, 1, 2, 48, 16, device=DEVICE)              # (K|V, B, Hkv, max, D)
    k, v = cache[0, :, :, :20], cache[1, :, :, :20]
    assert not q_btd.is_contiguous() and not k.is_contiguous()
    assert_close(fa.flash_attn(q_btd, k, v), eager_reference(q_btd, k, v, True), 1e-5, "out")


def test_tiled_reference_matches_eager_and_returns_the_logsumexp():
    q, k, v = random_qkv(2, 4, 2, 23, 23, 16, F32)
    out, lse = reference.tiled_attention(q, k, v, causal=True, block_m=8, block_n=8)
    scores = (q @ k.repeat_interleave(2, dim=1).transpose(2, 3)) / 4.0
    scores = scores.masked_fill(~torch.ones(23, 23, dtype=torch.bool, device=DEVICE).tril(), float("-inf"))
    assert_close(out, eager_reference(q, k, v, True), 1e-5, "out")
    assert_close(lse, scores.logsumexp(-1), 1e-5, "lse")


@pytest.mark.parametrize("dtype,use_mask,num_splits", [(F32, False, None), (F32, True, 3),
                                                       (BF16, True, 1)])
def test_decode_equals_full_attention_over_a_strided_cache(dtype, use_mask, num_splits):
    B, Hkv, G, D, S = 2, 2, 3, 16, 45
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, B, Hkv, 64, D, generator=g).to(DEVICE, dtype)  # (L, B, Hkv, max, D)
    values = torch.randn(2, B, Hkv, 64, D, generator=g).to(DEVICE, dtype)
    k, v = keys[1, :, :, :S], values[1, :, :, :S]                   # as KVCache.update returns
    qkv = torch.randn(B, Hkv + 2, G, D, generator=g).to(DEVICE, dtype)
    q = qkv[:, :Hkv]                                                # strided, like decode.py's
    key_mask = None
    if use_mask:  # row 0 is left-padded by 7 tokens
        key_mask = torch.ones(B, 1, 1, S, dtype=torch.bool, device=DEVICE)
        key_mask[0, ..., :7] = False

    out = fa.flash_attn_decode(q, k, v, key_mask, D ** -0.5, num_splits=num_splits)
    expected = eager_attention_decode(q.float(), k.float(), v.float(), key_mask, D ** -0.5)
    assert out.shape == (B, Hkv, G, D) and out.dtype == dtype
    assert_close(out, expected, TOL[dtype], "decode out")


@pytest.fixture
def model_pair():
    """Tiny 2-layer models, triton and eager, with the same large random weights (std 0.1, so
    greedy decoding has clear winners and is not decided by rounding)."""
    torch.manual_seed(0)
    triton_model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend="triton"))
    with torch.no_grad():
        for name, p in triton_model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    eager_model = QwenForCausalLM(QwenConfig.tiny(num_hidden_layers=2, attn_backend="eager"))
    eager_model.load_state_dict(triton_model.state_dict())
    return triton_model.to(DEVICE), eager_model.to(DEVICE)


def test_model_with_triton_backend_matches_eager_logits_and_gradients(model_pair):
    triton_model, eager_model = model_pair
    ids = torch.randint(0, 4096, (2, 19), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    out_t = triton_model(ids, labels=ids)
    out_e = eager_model(ids, labels=ids)
    out_t.loss.backward()
    out_e.loss.backward()
    assert_close(out_t.logits, out_e.logits, 1e-5, "logits")
    for (name, p_t), p_e in zip(triton_model.named_parameters(), eager_model.parameters(),
                                strict=True):
        assert_close(p_t.grad, p_e.grad, 1e-5, f"grad of {name}")


def test_generate_with_triton_backend_gives_eager_greedy_tokens(model_pair):
    triton_model, eager_model = model_pair
    prompt = torch.randint(0, 4096, (2, 6), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    tokens = qwenlab.generate(triton_model.eval(), prompt, max_new_tokens=5)
    assert torch.equal(tokens, qwenlab.generate(eager_model.eval(), prompt, max_new_tokens=5))


def test_padding_mask_goes_to_sdpa_and_matches_eager():
    q, k, v = random_qkv(2, 4, 2, 9, 9, 16, F32)
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool, device=DEVICE).tril()
    mask[0, :, :, :3] = False
    mask[0, :, :3, :3] = torch.eye(3, dtype=torch.bool, device=DEVICE)  # pads see themselves
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a padding mask falls back silently
        out = attend(q, k, v, mask, backend="triton")
    assert_close(out, eager_attention(q, k, v, mask, 0.25), 1e-5, "out")


def test_import_qwenlab_does_not_import_triton():
    code = "import sys, qwenlab; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_auto_never_picks_triton_on_cpu():
    assert not backend.supports(torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert "triton" in qwenlab.config.ATTN_BACKENDS


def _expect_fallback(monkeypatch, message):
    monkeypatch.setattr(backend, "_WARNED", set())
    q, k, v = (x.cpu() for x in random_qkv(1, 4, 2, 5, 5, 16, F32))  # CPU tensors
    with pytest.warns(UserWarning, match=message) as record:
        out = attend(q, k, v, backend="triton")
        attend(q, k, v, backend="triton")  # the same reason is reported once
    assert len(record) == 1 and record[0].message.args[0].endswith("; using sdpa")
    assert_close(out, eager_reference(q, k, v, True), 1e-5, "fallback out")


def test_triton_on_cpu_without_interpreter_falls_back_to_sdpa(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(fa, "INTERPRETED", False)  # as if compiled for a GPU
    _expect_fallback(monkeypatch, r"needs a CUDA GPU \(or TRITON_INTERPRET=1")


def test_triton_not_installed_falls_back_to_sdpa(monkeypatch):
    real_find_spec = backend.importlib.util.find_spec
    monkeypatch.setattr(backend.importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    _expect_fallback(monkeypatch, "triton, which is not installed")
    assert not backend.supports(torch.device("cuda"))


def test_unsupported_head_dim_falls_back_to_sdpa(monkeypatch):
    monkeypatch.setattr(backend, "_WARNED", set())
    q, k, v = random_qkv(1, 2, 1, 5, 5, 8, F32)
    with pytest.warns(UserWarning, match="head_dim 8"):
        out = attend(q, k, v, backend="triton")
    assert_close(out, eager_reference(q, k, v, True), 1e-5, "out")


def test_flash_attn_rejects_what_it_cannot_compute():
    q, k, v = random_qkv(1, 3, 2, 4, 4, 16, F32)
    with pytest.raises(ValueError, match="cannot share 2 KV heads"):
        fa.flash_attn(q, k, v)
    q, k, v = random_qkv(1, 2, 1, 8, 4, 16, F32)
    with pytest.raises(ValueError, match="T must not exceed S"):
        fa.flash_attn(q, k, v, causal=True)


@pytest.mark.skipif(DEVICE.type != "cuda",
                    reason="needs a CUDA GPU and compiled kernels (TRITON_INTERPRET=0)")
@pytest.mark.parametrize("D", [64, 128])
def test_compiled_kernel_on_gpu_matches_eager(D):
    q, k, v = (x.cuda().requires_grad_() for x in random_qkv(2, 28, 4, 1000, 1000, D, BF16))
    dout = torch.randn_like(q)
    out = fa.flash_attn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = eager_reference(q, k, v, True, dout)
    for name, a, e in zip(("out", "dq", "dk", "dv"), (out, *grads), ref, strict=True):
        assert_close(a, e, TOL[BF16], name)
    qd = q.detach()[:, :, -1:].reshape(2, 4, 7, D)  # the last token, heads folded by group
    dec = fa.flash_attn_decode(qd, k.detach(), v.detach())
    assert_close(dec.reshape(2, 28, 1, D), ref[0][:, :, -1:], TOL[BF16], "decode")


# Compiling needs no GPU: triton lowers a kernel to PTX and runs its bundled ptxas for a named
# target. This catches what the interpreter cannot (it runs the Python, not the compiler): type
# errors in constexpr branches, tl.dot shape rules, layouts. Hopper (sm_90), bf16, d=64, with
# the launch settings the GPU path uses. ~15 s on a cold cache, in a fresh process because
# this one's kernels were defined under TRITON_INTERPRET=1.
COMPILE_FOR_SM90 = """
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import qwenlab.kernels.flash_attention as fa

def signature(fn, pointers, constants, floats):
    return {n: "constexpr" if n in constants else pointers.get(n, "fp32" if n in floats else "i32")
            for n in fn.arg_names}

p, f32 = "*bf16", "*fp32"
fwd, bwd = fa._fwd_config(64, torch.bfloat16), fa._bwd_config(64, torch.bfloat16)
common = dict(HEAD_DIM=64, UPCAST=False, PRECISION="tf32")
kernels = [
    (fa._attn_fwd, dict(Q=p, K=p, V=p, Out=p, LSE=f32), ("qk_scale",), fwd,
     dict(GROUP=7, CAUSAL=True, BLOCK_M=fwd["BLOCK_M"], BLOCK_N=fwd["BLOCK_N"], **common)),
    (fa._attn_bwd_dkdv, dict(Q=p, K=p, V=p, DO=p, DK=p, DV=p, LSE=f32, DELTA=f32),
     ("qk_scale", "scale"), bwd,
     dict(GROUP=7, CAUSAL=True, BLOCK_M=bwd["BLOCK_M"], BLOCK_N=bwd["BLOCK_N"], **common)),
    (fa._attn_bwd_dq, dict(Q=p, K=p, V=p, DO=p, DQ=p, LSE=f32, DELTA=f32),
     ("qk_scale", "scale"), bwd,
     dict(GROUP=7, CAUSAL=True, BLOCK_M=bwd["BLOCK_M"], BLOCK_N=bwd["BLOCK_N"], **common)),
    (fa._attn_decode_split, dict(Q=p, K=p, V=p, KEY_MASK="*i1", O_PART=f32, LSE_PART=f32),
     ("qk_scale",), dict(num_warps=4, num_stages=2),
     dict(HAS_MASK=True, BLOCK_G=16, BLOCK_N=64, **common)),
    (fa._attn_decode_combine, dict(O_PART=f32, LSE_PART=f32, Out=p), (),
     dict(num_warps=4, num_stages=2), dict(HEAD_DIM=64, BLOCK_G=16)),
]
for fn, pointers, floats, launch, constants in kernels:
    src = ASTSource(fn, signature(fn, pointers, constants, floats), constexprs=constants)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=launch["num_warps"],
                                           num_stages=launch["num_stages"]))
    assert compiled.asm["cubin"], fn.__name__
    print(fn.__name__, "wgmma" in compiled.asm["ptx"])
"""


def test_kernels_compile_for_a_hopper_gpu_without_one():
    ptxas = Path(importlib.util.find_spec("triton").origin).parent / "backends/nvidia/bin/ptxas"
    if not ptxas.exists():
        pytest.skip("this triton build has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9 warns when unset
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # the forward and backward matmuls run on Hopper's tensor cores (wgmma instructions)
    assert result.stdout.split() == ["_attn_fwd", "True", "_attn_bwd_dkdv", "True",
                                     "_attn_bwd_dq", "True", "_attn_decode_split", "False",
                                     "_attn_decode_combine", "False"]
