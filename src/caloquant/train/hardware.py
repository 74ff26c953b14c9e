"""How a training step uses its hardware: numeric precision, autocast, TF32/cuDNN settings, FLOP counts.

Kept apart from the training loop so that the loop states *what* a step computes and this module *how fast*.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from caloquant._optional import require
from caloquant.machine import cpu_info
from caloquant.models.layers import ChannelPaddedConv3d

#: CPU ISA flags with native BF16 arithmetic (oneDNN runs bf16 convolutions on them; elsewhere it emulates).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

#: Dense peak TFLOP/s of known accelerators by name fragment: (bf16, tf32), from the vendors' data sheets.
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(f in cpu_info()[1] for f in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16 for ``device``: auto picks bf16 on CUDA with BF16 support and on CPUs with native BF16."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


#: The oneDNN ISA cap below AMX, named in the refusal of BF16 training where even repaired kernels are wrong.
AMX_BF16_CAP = "AVX512_CORE_BF16"
#: Largest relative L2 deviation of a BF16 computation from FP32 that ``bf16_deviation`` and
#: ``repair_bf16_convs`` accept: BF16 rounding gives 0.3-1.5 % on the ecal25 networks, a broken kernel about 100 %.
BF16_TOLERANCE = 0.05


def _conv_bf16_deviation(conv: torch.nn.Conv3d, shape: torch.Size) -> float:
    """Worst relative L2 deviation from FP32 of ``conv``'s BF16 output, input gradient and weight gradient on a
    fixed random input of ``shape``: the forward kernel and both backward ones."""
    dev = conv.weight.device
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
    was_training = conv.training
    conv.eval()
    try:
        runs = []
        for low in (False, True):
            x = x0.clone().requires_grad_(True)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=low):
                y = conv(x)
            r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dev)
            runs.append([y.detach().float(), *torch.autograd.grad((y.float() * r).sum(), [x, conv.weight])])
    finally:
        conv.train(was_training)
    return max(float((low - ref).norm() / ref.norm().clamp_min(1e-30)) for ref, low in zip(*runs, strict=True))


def repair_bf16_convs(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[list[str], list[str]]:
    """Check every 3-D convolution of ``module`` in BF16 against FP32 at the input shape it sees on ``inputs``, and
    swap those that are wrong for ``ChannelPaddedConv3d`` (same parameters, 16 input channels for the kernel).

    oneDNN's AMX BF16 kernel for 8 input channels and a (6, 6, 8) kernel is about 110 % off in torch 2.13 (Intel
    Xeon with AMX, 2026-12-05; ``bench/amx_bf16_repro.py``) and its 16-channel kernel right, so padding keeps
    AMX's speed where capping oneDNN below AMX made the campaign's step 1.27x slower than FP32. Returns (the
    names of repaired convolutions, the names of those still wrong after padding, left as they were)."""
    convs = {name: conv for name, conv in module.named_modules() if isinstance(conv, torch.nn.Conv3d)}
    shapes: dict[str, torch.Size] = {}

    def record(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(conv: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            shapes.setdefault(name, args[0].shape)
        return hook

    hooks = [conv.register_forward_pre_hook(record(name)) for name, conv in convs.items()]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    repaired, wrong = [], []
    for name, shape in shapes.items():
        conv = convs[name]
        if _conv_bf16_deviation(conv, shape) <= BF16_TOLERANCE:
            continue
        padded_to = 16 * (int(conv.in_channels) // 16 + 1)
        if not name or isinstance(conv, ChannelPaddedConv3d) or conv.groups != 1 or conv.padding_mode != "zeros":
            wrong.append(name)
            continue
        twin = ChannelPaddedConv3d.replacing(conv, padded_to)
        if _conv_bf16_deviation(twin, shape) <= BF16_TOLERANCE:
            parent, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(parent), leaf, twin)
            repaired.append(name)
        else:
            wrong.append(name)
    return repaired, wrong


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
