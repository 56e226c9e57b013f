"""Where a model runs and in which precision: shared by training, batch scoring and the server."""

from __future__ import annotations

import torch

from clothing_assets.ml.cpu import bf16_native


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype_for(device: torch.device, bf16: str = "auto") -> torch.dtype | None:
    """bf16 autocast where the hardware runs it natively (CUDA with bf16; CPUs whose
    `cpu.cpu_kind()` is AVX512-BF16 or AMX-BF16), else None: plain fp32, the fastest path on
    other CPUs. `on` insists (oneDNN's emulated bf16 on an AVX-512 CPU without BF16 is
    accepted then); `off` never uses it."""
    if bf16 == "off":
        return None
    if device.type == "cuda":
        possible = native = torch.cuda.is_bf16_supported()
    else:
        # torch's own check is true on any AVX-512 CPU, where bf16 is emulated and slower
        possible = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        native = possible and bf16_native()
    if bf16 == "on":
        if not possible:
            raise ValueError(f"bf16 was asked for but {device} does not support it")
        return torch.bfloat16
    return torch.bfloat16 if native else None


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `amp_dtype` on `device`'s kind; a no-op context when it is None (fp32)."""
    return torch.autocast(
        device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    )
