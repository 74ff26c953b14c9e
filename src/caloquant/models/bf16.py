"""BF16 kernel checks: a module's BF16 computation against FP32, and the repair of convolutions oneDNN gets wrong.

Shared by training (which trains in BF16 autocast) and the runtime (which exports for OpenVINO BF16): both run
oneDNN's kernels, and with torch 2.13 / OpenVINO 2026.4 the AMX BF16 kernel for a 3-D convolution of 8 input
channels with a (6, 6, 8) kernel is about 110 % off FP32 (Intel Xeon with AMX, 2026-12-05).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from caloquant.models.layers import ChannelPaddedConv3d

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
        if not name or isinstance(conv, ChannelPaddedConv3d) or conv.groups != 1 or conv.padding_mode != "zeros":
            wrong.append(name)
            continue
        twin = _padded(conv)
        if _conv_bf16_deviation(twin, shape) <= BF16_TOLERANCE:
            _swap(module, name, twin)
            repaired.append(name)
        else:
            wrong.append(name)
    return repaired, wrong


def _padded(conv: torch.nn.Conv3d) -> ChannelPaddedConv3d:
    """``conv``'s twin on input channels zero-padded to the next multiple of 16 (8 -> 16, 16 -> 32)."""
    return ChannelPaddedConv3d.replacing(conv, 16 * (int(conv.in_channels) // 16 + 1))


def _swap(module: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent), leaf, new)


def pad_convs(module: torch.nn.Module, names: Sequence[str]) -> torch.nn.Module:
    """``module`` with the named 3-D convolutions computed on zero-padded input channels (to the next multiple of
    16), in place: what ``repair_bf16_convs`` found wrong on one machine, applied to a copy for export."""
    for name in names:
        conv = module.get_submodule(name)
        if not isinstance(conv, torch.nn.Conv3d) or isinstance(conv, ChannelPaddedConv3d):
            raise ValueError(f"{name} is not a plain 3-D convolution of this model")
        _swap(module, name, _padded(conv))
    return module


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
