"""How a training step uses its hardware: numeric precision, autocast, TF32/cuDNN settings, FLOP counts.

Kept apart from the training loop so that the loop states *what* a step computes and this module *how fast*.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from caloquant._optional import require
from caloquant.machine import cpu_has_native_bf16, cpu_info

#: Dense peak TFLOP/s of known accelerators by name fragment: (bf16, tf32), from the vendors' data sheets.
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16 for ``device``: auto picks bf16 on CUDA with BF16 support and on CPUs with native BF16."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


#: The oneDNN ISA cap below AMX, named in the refusal of BF16 training where even repaired kernels are wrong.
AMX_BF16_CAP = "AVX512_CORE_BF16"
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
