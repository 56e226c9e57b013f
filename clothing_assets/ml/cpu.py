"""Which kind of CPU this process computes on, honestly: the CPU's own flags, capped by the
settings that make oneDNN and ATen use a smaller instruction set.

Kinds, from least to most capable: `other`, `AVX2`, `AVX512`, `AVX512-BF16`, `AMX-BF16`. bf16
autocast pays only where bf16 is native (the last two); elsewhere oneDNN emulates it (an
AVX-512 CPU without BF16) or cannot run it (AVX2), and fp32 is the fastest path.

`ONEDNN_MAX_CPU_ISA=AVX2` and `ATEN_CPU_CAPABILITY=avx2` on an AVX-512 machine make its
libraries behave as on an AVX2 one; the kind follows them (the lowest of the flags and the two
caps), so an emulated AVX2 run both trains in fp32 and says `AVX2`. Torch-free: bench scripts
and the asset's metadata can name the kind without importing torch.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

KINDS = ("other", "AVX2", "AVX512", "AVX512-BF16", "AMX-BF16")
BF16_NATIVE_KINDS = frozenset({"AVX512-BF16", "AMX-BF16"})
_TOP = KINDS[-1]


def kind_from_flags(flags: str) -> str:
    """The kind a CPU with these `/proc/cpuinfo` flags (space-separated) is, before any cap."""
    have = set(flags.lower().split())
    if {"avx512_bf16", "amx_bf16"} <= have:
        return "AMX-BF16"
    if "avx512_bf16" in have:
        return "AVX512-BF16"
    if {"avx512f", "avx512bw", "avx512vl"} <= have:  # oneDNN's avx512_core, less DQ
        return "AVX512"
    if "avx2" in have:
        return "AVX2"
    return "other"


def onednn_cap(value: str | None) -> str:
    """The highest kind oneDNN may use under `ONEDNN_MAX_CPU_ISA=value` (`DNNL_MAX_CPU_ISA` is
    its older name); unset, `ALL`, `DEFAULT` or an unknown value caps nothing."""
    isa = (value or "").strip().upper()
    if not isa or isa in ("ALL", "DEFAULT"):
        return _TOP
    if "AMX" in isa:
        return "AMX-BF16"
    if isa.startswith("AVX10") or isa in ("AVX512_CORE_BF16", "AVX512_CORE_FP16"):
        return "AVX512-BF16"
    if isa.startswith("AVX512"):
        return "AVX512"
    if isa.startswith("AVX2"):
        return "AVX2"
    if isa in ("AVX", "SSE41"):
        return "other"
    return _TOP


def aten_cap(value: str | None) -> str:
    """The highest kind ATen's kernels may use under `ATEN_CPU_CAPABILITY=value` (torch's
    values: `default`, `avx2`, `avx512`); unset or unknown caps nothing."""
    return {"default": "other", "avx2": "AVX2", "avx512": _TOP}.get(
        (value or "").strip().lower(), _TOP
    )


def effective_kind(flags: str, *, onednn_isa: str | None, aten_capability: str | None) -> str:
    """The lowest of the flags' kind and the two caps: what the libraries actually run."""
    caps = (kind_from_flags(flags), onednn_cap(onednn_isa), aten_cap(aten_capability))
    return min(caps, key=KINDS.index)


@functools.cache
def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> str:
    """The first `flags` line of `/proc/cpuinfo` (x86 Linux); empty elsewhere."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value
    return ""


def cpu_kind() -> str:
    """This process's CPU kind: `/proc/cpuinfo` flags capped by `ONEDNN_MAX_CPU_ISA` (or
    `DNNL_MAX_CPU_ISA`) and `ATEN_CPU_CAPABILITY` as they are set now."""
    return effective_kind(
        _cpuinfo_flags(),
        onednn_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
        aten_capability=os.environ.get("ATEN_CPU_CAPABILITY"),
    )


def bf16_native(kind: str | None = None) -> bool:
    """True where bf16 matrix instructions are native (AVX512-BF16, AMX): only there does
    bf16 autocast beat fp32 on the CPU."""
    return (kind if kind is not None else cpu_kind()) in BF16_NATIVE_KINDS
