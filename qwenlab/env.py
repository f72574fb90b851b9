"""Where am I running? The environment check that opens every chapter.

Each chapter sets ``SCALE = qwenlab.env.detect_scale()`` at the top and picks its sizes from it:
``"cpu"`` (the default: tiny models, short runs, about a minute on a 2-core laptop) or ``"gpu"``
(bigger models and longer runs, e.g. on a Colab GPU runtime). The environment variable
``QWENLAB_SCALE`` overrides the guess, so CI can pin ``cpu`` and a learner can force either.

``print_environment()`` prints the versions and the device, the first thing to paste into a
bug report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

SCALES = ("cpu", "gpu")
SCALE_VARIABLE = "QWENLAB_SCALE"


def detect_scale() -> str:
    """``"gpu"`` when CUDA is available, else ``"cpu"``; ``$QWENLAB_SCALE`` overrides it."""
    forced = os.environ.get(SCALE_VARIABLE, "")
    if forced:  # set and not empty
        scale = forced.strip().lower()
        if scale not in SCALES:
            raise ValueError(f"{SCALE_VARIABLE}={forced!r} is not a scale; "
                             f"set it to one of {', '.join(SCALES)} (or unset it to detect)")
        return scale
    return "gpu" if torch.cuda.is_available() else "cpu"


def in_colab() -> bool:
    """True inside a Google Colab runtime (its notebook imports ``google.colab`` at start)."""
    return "google.colab" in sys.modules


def environment_report() -> dict[str, str]:
    """Versions, device, bf16 support and the SCALE that chapters will use, as strings."""
    import qwenlab  # here, not at the top: qwenlab/__init__ may one day import this module

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "no (use fp16 or fp32)"
    else:
        device = f"CPU ({torch.get_num_threads()} threads)"
        bf16 = "yes" if _cpu_has_fast_bf16() else "emulated (slower than fp32 on this CPU)"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "qwenlab": qwenlab.__version__,
        "device": device,
        "bf16": bf16,
        "SCALE": detect_scale(),
    }


def print_environment(extra: dict[str, str] | None = None) -> None:
    """The report, plus any ``extra`` rows, as aligned ``key: value`` lines."""
    report = {**environment_report(), **(extra or {})}
    width = max(len(key) for key in report) + 1   # +1 for the colon
    for key, value in report.items():
        print(f"{key + ':':<{width}} {value}")


def _cpu_has_fast_bf16() -> bool:
    """bf16 always runs on a CPU; it is fast only where oneDNN finds bf16 instructions."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private helper: absent from some builds
        return False


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
