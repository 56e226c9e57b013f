"""CPU-kind detection: the flags' kind, the oneDNN and ATen caps, and when bf16 is native."""

from __future__ import annotations

import pytest

from clothing_assets.ml import cpu

EPYC_AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni"
AVX512 = EPYC_AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
AVX512_BF16 = AVX512 + " avx512_bf16"
SAPPHIRE = AVX512_BF16 + " amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    ("flags", "kind"),
    [("", "other"), ("fpu sse sse2 avx", "other"), (EPYC_AVX2, "AVX2"), (AVX512, "AVX512"),
     (AVX512_BF16, "AVX512-BF16"), (SAPPHIRE, "AMX-BF16"), ("avx512f avx2", "AVX2")],
)  # fmt: skip
def test_kind_from_flags(flags, kind):
    assert cpu.kind_from_flags(flags) == kind


@pytest.mark.parametrize(
    ("flags", "onednn", "aten", "kind"),
    [
        (AVX512_BF16, None, None, "AVX512-BF16"),
        (AVX512_BF16, "AVX2", "avx2", "AVX2"),  # the emulated AVX2 machine
        (AVX512_BF16, None, "avx2", "AVX2"),
        (AVX512_BF16, "avx2", None, "AVX2"),  # oneDNN reads its value case-insensitively
        (AVX512_BF16, "AVX512_CORE", None, "AVX512"),  # bf16 off, AVX-512 on
        (AVX512_BF16, "AVX512_CORE_BF16", "avx512", "AVX512-BF16"),
        (SAPPHIRE, "AVX512_CORE_BF16", None, "AVX512-BF16"),
        (SAPPHIRE, "AVX10_1_512_AMX", None, "AMX-BF16"),
        (AVX512_BF16, "ALL", "", "AVX512-BF16"),
        (AVX512_BF16, "SSE41", None, "other"),
        (AVX512_BF16, None, "default", "other"),
        (EPYC_AVX2, "AVX512_CORE_BF16", "avx512", "AVX2"),  # a cap never adds instructions
        (EPYC_AVX2, "not-an-isa", "not-a-capability", "AVX2"),
    ],
)
def test_caps_lower_the_kind(flags, onednn, aten, kind):
    assert cpu.effective_kind(flags, onednn_isa=onednn, aten_capability=aten) == kind


@pytest.mark.parametrize(
    ("kind", "native"),
    [("other", False), ("AVX2", False), ("AVX512", False), ("AVX512-BF16", True),
     ("AMX-BF16", True)],
)  # fmt: skip
def test_bf16_is_native_only_with_bf16_instructions(kind, native):
    assert cpu.bf16_native(kind) is native


def test_cpu_kind_follows_the_environment(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    unset = cpu.cpu_kind()
    assert unset in cpu.KINDS
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert cpu.cpu_kind() == min(unset, "AVX2", key=cpu.KINDS.index)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert cpu.cpu_kind() == "other"
    assert not cpu.bf16_native()
