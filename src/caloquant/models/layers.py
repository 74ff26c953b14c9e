"""Building blocks shared by the 3DGAN models: Keras-faithful padding and a batch norm that can sync over ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from caloquant._optional import require


def keras_bn(channels: int, eps: float = 1e-3) -> nn.BatchNorm3d:
    """BatchNorm with Keras defaults (momentum 0.99 means PyTorch momentum 0.01)."""
    return GlobalBatchNorm3d(channels, eps=eps, momentum=0.01)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics cover the global batch when torch.distributed is initialised.

    ``nn.SyncBatchNorm`` needs CUDA; this version all-reduces per-channel sums with autograd, so it works
    with gloo on CPU as well, and makes N ranks of batch B compute the same statistics as one rank of N*B.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = require("torch.distributed.nn.functional").all_reduce
        dims = [0, 2, 3, 4]
        c = x.shape[1]
        shape = (1, c, 1, 1, 1)
        n_local = torch.tensor([float(x.numel() // c)], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), n_local]))  # two passes: no E[x^2] - E[x]^2 cancellation
        count = stats[-1]
        mean = stats[:c] / count
        var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var * count / (count - 1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def pad3d(x: int, y: int, z: int) -> nn.ConstantPad3d:
    """Keras ZeroPadding3D((x, y, z)) for tensors laid out (N, C, X, Y, Z)."""
    return nn.ConstantPad3d((z, z, y, y, x, x), 0.0)


def same_pad(kernel: tuple[int, int, int]) -> nn.ConstantPad3d:
    """Explicit Keras/TensorFlow 'same' padding (k-1 split as floor before, ceil after), ONNX-friendly."""
    kx, ky, kz = kernel
    return nn.ConstantPad3d(((kz - 1) // 2, kz // 2, (ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2), 0.0)


class _ReluLeakyGrad(torch.autograd.Function):
    """ReLU forward; backward passes ``slope`` x the gradient where the input was negative."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope  # type: ignore[attr-defined]
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.where(x > 0, grad, grad * ctx.slope), None  # type: ignore[attr-defined]


class SurrogateReLU(nn.Module):
    """A ReLU whose backward pass leaks ``slope`` of the gradient into dead (negative) inputs.

    The forward pass, and so the model and its exported weights, is exactly a ReLU. Used for training only, on a
    generator's output ReLU: a cell that is off (ReLU input < 0) otherwise gets no gradient at all, so losses
    that ask for more fired cells (occupancy, the low-energy cell spectrum) could never switch one on.
    """

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReluLeakyGrad.apply(x, self.slope)  # type: ignore[no-any-return]
