"""The "triton" attention backend: the FlashAttention kernel behind ``qwenlab.attention``.

``qwenlab.attention`` registers this backend when qwenlab is imported, but nothing here imports
triton until attention actually runs: triton decides once, when the kernels are defined,
whether they run compiled on a GPU or in its CPU interpreter (``TRITON_INTERPRET=1``), so that
variable must be set before the first import, and ``import qwenlab`` must not do it.

When the kernel cannot run, attention falls back to PyTorch's ``sdpa`` and says why, once:
- triton is not installed;
- the tensors are on the CPU and the interpreter was not requested (or on another device);
- a CUDA GPU older than compute capability 8.0 (Ampere): no bf16 tensor cores;
- a head_dim or dtype the kernel is not built for.
A bool ``mask`` (only passed for left-padded batches) also goes to sdpa, silently: the kernel
implements the causal and the decode key masks, not arbitrary ones.

"auto" chooses this backend only on CUDA GPUs of compute capability 8.0 or newer with triton
installed; on the CPU the interpreter is a teaching and testing tool, ~10^4x slower than torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

import torch

_KERNELS = "qwenlab.kernels.flash_attention"
_WARNED: set[str] = set()  # reasons already reported (one warning per reason per process)


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreted() -> bool:
    """Do (or will) the kernels run in triton's interpreter?"""
    module = sys.modules.get(_KERNELS)
    if module is not None:  # decided when it was imported
        return module.INTERPRETED
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def supports(device: torch.device | str) -> bool:
    """Whether "auto" should pick triton on this device: a CUDA GPU with compute capability
    8.0 or newer, and triton installed."""
    device = torch.device(device)
    if device.type != "cuda" or not triton_installed() or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernel cannot run on ``device`` in this process, or None when it can."""
    if not triton_installed():
        return "triton backend needs triton, which is not installed (pip install triton)"
    if device.type == "cpu":
        if _interpreted():
            return None
        if _KERNELS in sys.modules and os.environ.get("TRITON_INTERPRET"):
            return ("triton backend: the kernels were compiled for a GPU before "
                    "TRITON_INTERPRET=1 was set; set it before anything imports triton")
        return ("triton backend needs a CUDA GPU (or TRITON_INTERPRET=1, set before triton is "
                "imported, for the CPU interpreter)")
    if device.type != "cuda":
        return f"triton backend needs a CUDA GPU, not {device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        return (f"triton backend needs compute capability 8.0 or newer (Ampere+); this GPU "
                f"has {major}.{minor}")
    return None


def _warn_once(reason: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"{reason}; using sdpa", stacklevel=4)


def _kernels():
    return importlib.import_module(_KERNELS)


def _fallback_reason(q, k, v) -> str | None:
    reason = unavailable_reason(q.device)
    if reason is None:
        reason = _kernels().check_inputs(q, k, v, causal=False)
        if reason is not None:
            reason = f"triton backend: {reason}"
    return reason


def attend(q, k, v, mask, scale):
    """The backend's attention (see qwenlab.attention for the contract)."""
    from ..attention import sdpa_attention

    if mask is not None:  # left-padded batch: an arbitrary bool mask, which sdpa handles
        return sdpa_attention(q, k, v, mask, scale)
    reason = _fallback_reason(q, k, v)
    if reason is not None:
        _warn_once(reason)
        return sdpa_attention(q, k, v, mask, scale)
    return _kernels().flash_attn(q, k, v, causal=True, scale=scale)


def attend_decode(q, k, v, key_mask, scale):
    """One new token per row, query heads folded by KV group (see qwenlab.attention)."""
    from ..attention import sdpa_attention_decode

    reason = _fallback_reason(q, k, v)
    if reason is not None:
        _warn_once(reason)
        return sdpa_attention_decode(q, k, v, key_mask, scale)
    return _kernels().flash_attn_decode(q, k, v, key_mask, scale)
