"""The machine caloquant runs on: CPU model and the ISA flags that matter for INT8/BF16, cores, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from caloquant.errors import InputError

#: ISA extensions that decide whether INT8 and BF16 kernels can be fast.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                  "amx_int8")
#: Environment variables that cap the ISA oneDNN (and OpenVINO's CPU plugin) dispatch to; read once at load.
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA")
#: /proc/cpuinfo flags an ISA cap needs to be meaningful (a cap above what the CPU has changes nothing).
ISA_CAP_FLAGS = {
    "AVX2": ("avx2", "fma"),
    "AVX512_CORE_VNNI": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"),
    "AVX512_CORE_BF16": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"),
    "AVX512_CORE_AMX": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16", "amx_tile",
                        "amx_bf16", "amx_int8"),
}
#: CPU ISA flags with native BF16 arithmetic (oneDNN runs bf16 convolutions on them; elsewhere it emulates).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PACKAGES = ("caloquant", "numpy", "numba", "torch", "openvino", "nncf", "onnxruntime", "onnx", "scikit-learn")


def cpu_info() -> tuple[str, set[str]]:
    """(model name, ISA flags) from /proc/cpuinfo; falls back to platform strings elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return model, flags


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16) and no ISA cap in the environment
    holds oneDNN below it (under ``ONEDNN_MAX_CPU_ISA=AVX2`` BF16 is emulated, about 40x slower)."""
    caps = [c for c in isa_caps().values() if c in ISA_CAP_FLAGS]
    return (any(f in cpu_info()[1] for f in NATIVE_BF16_FLAGS)
            and all("avx512_bf16" in ISA_CAP_FLAGS[c] for c in caps))


def isa_caps() -> dict[str, str]:
    """The ISA caps set in the environment (variable -> value), empty when uncapped."""
    return {v: os.environ[v] for v in ISA_CAP_VARS if os.environ.get(v)}


def missing_isa_flags(cap: str, flags: set[str] | None = None) -> list[str]:
    """The CPU flags ``cap`` needs that this CPU (or ``flags``) lacks; InputError for an unknown cap."""
    if cap not in ISA_CAP_FLAGS:
        raise InputError(f"unknown ISA cap {cap!r}; choose one of {', '.join(ISA_CAP_FLAGS)}")
    have = cpu_info()[1] if flags is None else flags
    return [f for f in ISA_CAP_FLAGS[cap] if f not in have]


def isa_identity() -> dict[str, Any]:
    """What decides which kernels run: CPU model, the relevant ISA flags it has, and any ISA cap in force."""
    model, flags = cpu_info()
    return {"cpu": model, "isa": sorted(f for f in RELEVANT_FLAGS if f in flags), "caps": isa_caps()}


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def isa_words(machine: dict[str, Any]) -> str:
    """CPU and ISA of an ``isa_identity()`` record in words, e.g. 'AMD EPYC (avx2, fma)'."""
    caps = ", caps " + ", ".join(f"{k}={v}" for k, v in machine.get("caps", {}).items()) if machine.get("caps") else ""
    return f"{machine.get('cpu', '?')} ({', '.join(machine.get('isa', [])) or 'no AVX2'}{caps})"


def isa_change_note(tuned: dict[str, Any] | None) -> str | None:
    """What to say when a recipe tuned on the machine ``tuned`` (an ``isa_identity()``) is replayed here (None on
    the same ISA)."""
    here = isa_identity()
    if tuned is None:
        return (f"the recipe does not record the ISA it was tuned on; re-checking its physics against FP32 on "
                f"{isa_words(here)}")
    if (tuned.get("isa"), tuned.get("caps", {})) == (here["isa"], here["caps"]):
        return None
    return f"recipe tuned on {isa_words(tuned)}, replayed on {isa_words(here)}: re-checking its physics against FP32"


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None where it is not available)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def describe_machine() -> dict[str, object]:
    """A JSON-ready description of this machine, its load at the time and the library versions."""
    model, flags = cpu_info()
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": model,
        "isa": {f: (f in flags) for f in RELEVANT_FLAGS},
        "isa_caps": isa_caps(),
        "cores": cpu_count(),
        "memory_gib": memory_gib(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": versions,
    }


def describe_markdown(d: dict[str, object] | None = None) -> str:
    """One paragraph for docs/benchmarks.md, of ``d`` (a recorded ``describe_machine()``) or of this machine now."""
    d = describe_machine() if d is None else d
    isa = d["isa"]
    assert isinstance(isa, dict)
    have = ", ".join(k for k, v in isa.items() if v) or "none of the listed"
    lack = ", ".join(k for k, v in isa.items() if not v) or "nothing"
    versions = d["versions"]
    assert isinstance(versions, dict)
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    mem = f", {d['memory_gib']} GiB" if d.get("memory_gib") else ""
    avg = d.get("load_average_1min")
    load = f" (1-min load average {avg} when described)" if avg is not None else ""
    return (f"{d['cpu']}, {d['cores']} cores{mem}{load}; ISA: {have} (missing: {lack}); Python {d['python']}; "
            f"{vers}.")
