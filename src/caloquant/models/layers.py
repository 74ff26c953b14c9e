"""Building blocks shared by the 3DGAN models: Keras-faithful padding, a batch norm that can sync over ranks and the
entry-point shift of the generators' output."""

from __future__ import annotations


import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch import nn

from caloquant._optional import require
from caloquant.models.entry import entry_offsets, shift_showers


def keras_bn(channels: int, eps: float = 1e-3) -> nn.BatchNorm3d:
    """BatchNorm with Keras defaults (momentum 0.99 means PyTorch momentum 0.01)."""
    return GlobalBatchNorm3d(channels, eps=eps, momentum=0.01)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics cover the global batch when torch.distributed is initialised.

    ``nn.SyncBatchNorm`` needs CUDA; this version all-reduces per-channel sums with autograd, so it works
    with gloo on CPU as well, and makes N ranks of batch B compute the same statistics as one rank of N*B.
    """

    sync = True  #: False while ``models.registry.calibrate_batchnorm`` recomputes statistics on one rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
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


class ChannelPaddedConv3d(nn.Conv3d):
    """A Conv3d that computes with its input channels zero-padded to ``padded_channels``: the same parameters
    and the same result, through a different kernel.

    oneDNN's AMX BF16 kernel for 8 input channels with a (6, 6, 8) kernel (the ecal25 generator's first
    convolution) is about 110 % off FP32 in torch 2.13 and OpenVINO 2026.4, while its 16-channel kernel is
    right; ``models.bf16.repair_bf16_convs`` swaps this in where a check finds a convolution wrong."""

    def __init__(self, *args: object, padded_channels: int = 16, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # nn.Conv3d's own signature
        self.padded_channels = padded_channels

    @classmethod
    def replacing(cls, conv: nn.Conv3d, padded_channels: int = 16) -> ChannelPaddedConv3d:
        """A padded twin of ``conv`` that shares its parameter tensors (optimizers and checkpoints see no change)."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or padded_channels < conv.in_channels:
            raise ValueError(f"cannot pad {conv} to {padded_channels} input channels")
        twin = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation, bias=conv.bias is not None, padded_channels=padded_channels,
                   device=conv.weight.device, dtype=conv.weight.dtype)
        twin.weight = conv.weight
        twin.bias = conv.bias
        return twin.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.padded_channels - self.in_channels
        w = self.weight
        zeros = w.new_zeros(w.shape[0], extra, *w.shape[2:])  # a constant of known shape: ONNX export needs it
        return F.conv3d(F.pad(x, (0, 0, 0, 0, 0, 0, 0, extra)), torch.cat([w, zeros], 1), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


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


class EntryShift(nn.Module):
    """Output stage that moves each generated shower rigidly in x and y by up to ``amplitude`` cells.

    The reference MC places every entry point uniformly within its cell (simulate.engine), most of the shower-to-
    shower spread of its barycentre; with this stage the generator learns the centred shower and the shift is added,
    as the detector adds it. Shower i's offsets are uniform in (-amplitude, amplitude) and come from its own latent
    entries ``first`` .. ``first + 3``: the arctangent of the ratio of two independent standard normals, over pi, is
    uniform on (-1/2, 1/2), and the ratio does not see the energy factor of the ecal25 latent. So the stage needs no
    input of its own, has no parameters (checkpoints are unchanged) and passes gradients to the cells. Energies are
    shared between neighbours in GeV-proportional units (``raw ** (1 / power)``), not in the training
    representation. The code is ``models.entry``'s, which ``ModelSpec.to_physical`` also runs: exports and inference
    engines stop before this stage (``models.registry.centred``) and decoding shifts, alike in every runtime and
    deterministically per shower seed.
    """

    def __init__(self, amplitude: float, power: float, first: int) -> None:
        super().__init__()
        if not 0.0 < amplitude <= 1.0:
            raise ValueError(f"entry shift amplitude {amplitude!r} cells is not in (0, 1]")
        self.amplitude, self.power, self.first = float(amplitude), float(power), int(first)

    def offsets(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) offsets in cells of each shower of latent batch ``z``."""
        return entry_offsets(z.float(), self.amplitude, self.first, torch)  # type: ignore[no-any-return]

    def forward(self, raw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cells = raw.float().clamp_min(0) ** (1.0 / self.power)
        cells = shift_showers(cells, z.float(), self.amplitude, self.first, torch)
        # clamp so that the unselected branch's gradient stays finite (0 ** power has an infinite slope)
        return torch.where(cells > 0, cells.clamp_min(1e-30) ** self.power, torch.zeros_like(cells))
