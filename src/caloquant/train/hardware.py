"""How a training step uses its hardware: numeric precision, autocast, TF32/cuDNN settings, FLOP counts.

Kept apart from the training loop so that the loop states *what* a step computes and this module *how fast*.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from caloquant._optional import require
from caloquant.machine import cpu_info, isa_caps

#: CPU ISA flags with native BF16 arithmetic (oneDNN runs bf16 convolutions on them; elsewhere it emulates).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

#: Dense peak TFLOP/s of known accelerators by name fragment: (bf16, tf32), from the vendors' data sheets.
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(f in cpu_info()[1] for f in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16 for ``device``: auto picks bf16 on CUDA with BF16 support and on CPUs with native BF16 but
    no AMX. On AMX CPUs BF16 must run under ``AMX_BF16_CAP``, where the campaign's step took 1.27x as long as in
    FP32 (Intel Xeon with AMX, idle, 2026-12-05: 20.86 against 26.41 showers/s; docs/benchmarks.md)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() and "amx_bf16" not in cpu_info()[1] else "fp32"


#: The oneDNN ISA cap BF16 training runs under on CPUs with AMX. With torch 2.13 oneDNN's AMX BF16 kernel for a
#: 3-D convolution of 8 input channels with a (6, 6, 8) kernel, the ecal25 generator's first, returns wrong values
#: (relative L2 error 1.1 against FP32; Intel Xeon with AMX, 2026-12-05; ``bench/amx_bf16_repro.py``): a campaign
#: run diverged within 3 steps. The AVX512-BF16 kernels are right, and were what every earlier CPU run used.
AMX_BF16_CAP = "AVX512_CORE_BF16"
#: Largest relative L2 deviation of a BF16 forward pass from FP32 that ``bf16_deviation`` callers accept: BF16
#: rounding gives 0.3-0.6 % on the ecal25 generator, a broken kernel about 100 %.
BF16_TOLERANCE = 0.05


def keep_bf16_off_amx(device: torch.device, precision: str) -> str | None:
    """For BF16 on an AMX CPU with no ISA cap chosen: cap oneDNN at ``AMX_BF16_CAP`` and return the cap.

    oneDNN reads the cap when it creates its first kernel, so this must run before the process's first
    convolution; later, the cap does nothing and ``bf16_deviation`` is what catches the fault."""
    if device.type != "cpu" or precision != "bf16" or "amx_bf16" not in cpu_info()[1] or isa_caps():
        return None
    os.environ["ONEDNN_MAX_CPU_ISA"] = AMX_BF16_CAP
    return AMX_BF16_CAP


def bf16_deviation(module: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """Relative L2 deviation of ``module``'s BF16-autocast forward pass from its FP32 one on ``inputs`` (the first
    output tensor, or every value of a dict output), in eval mode: a check of the kernels, not of training."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ref = module(*inputs)
            with torch.autocast(device_type=inputs[0].device.type, dtype=torch.bfloat16):
                low = module(*inputs)
    finally:
        module.train(was_training)

    def flat(out: Any) -> torch.Tensor:
        values = out.values() if isinstance(out, dict) else [out]
        return torch.cat([v.float().flatten() for v in values])

    ref_t, low_t = flat(ref), flat(low)
    return float((low_t - ref_t).norm() / ref_t.norm().clamp_min(1e-30))


def configure_backends(device: torch.device) -> None:
    """TF32 matrix and convolution arithmetic and cuDNN autotuning on CUDA (no effect on CPU)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def compile_module(module: torch.nn.Module, device: torch.device) -> Callable[..., Any]:
    """``torch.compile(module)``; on CPU with inductor's C++ kernels capped at 256-bit vectors.

    With torch 2.13 the AVX-512 kernels inductor generates for a training-mode BatchNorm3d after a LeakyReLU on
    channels-last 3-D tensors of 25^3 cells return wrong values (AVX-512 EPYC, 2026-12-04: the compiled 3DGAN
    discriminator's first loss 191 against 8.7 eager); the 256-bit kernels agree with eager. The convolutions
    run in oneDNN either way, so the cap costs little.
    """
    if device.type == "cpu":
        inductor = require("torch._inductor.config")
        if inductor.cpp.simdlen is None or inductor.cpp.simdlen > 256:
            inductor.cpp.simdlen = 256
    return torch.compile(module)


def autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A factory of autocast contexts for the forward passes (a no-op context in fp32)."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@contextlib.contextmanager
def count_flops() -> Iterator[Callable[[], int]]:
    """Count the floating-point operations of the enclosed PyTorch code (forward and backward)."""
    mode = require("torch.utils.flop_counter").FlopCounterMode(display=False)
    with mode:
        yield mode.get_total_flops


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_info()[0]


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The data-sheet dense peak for ``precision`` (bf16; fp32 counts TF32 on CUDA), None where unknown."""
    if device.type != "cuda":
        return None
    name = device_name(device)
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if key in name:
            return bf16 if precision == "bf16" else tf32
    return None
