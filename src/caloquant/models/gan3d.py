"""The two CERN 3DGAN architectures in PyTorch, layer for layer as in the Keras reference (gan3d.md section 1).

Tensors are laid out (N, C, X, Y, Z); showers leave the generators as (N, X, Y, Z) after the channel is dropped.
Generators output cell energies in the *training* representation ((xscale * E_cell) ** xpower); use
``caloquant.models.ModelSpec.to_physical`` to get GeV back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from caloquant.models.entry import ENTRY_LATENT
from caloquant.models.layers import EntryShift, keras_bn, pad3d, same_pad

#: Keras LeakyReLU default slope.
LEAKY = 0.3


def _he_uniform(conv: nn.Conv3d) -> nn.Conv3d:
    nn.init.kaiming_uniform_(conv.weight, a=0.0, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _glorot_normal(module: nn.Module) -> nn.Module:
    nn.init.xavier_normal_(module.weight)  # type: ignore[arg-type]
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)  # type: ignore[arg-type]
    return module


def _glorot_uniform(module: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(module.weight)  # type: ignore[arg-type]
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)  # type: ignore[arg-type]
    return module


class EcalEnergyGenerator(nn.Module):
    """Fixed-angle generator, 25x25x25 output; input is the latent vector already multiplied by E/100.

    ``entry_jitter`` > 0 (cells) ends it with an ``EntryShift`` driven by latent entries 0-3 (``power``: the
    training representation's exponent)."""

    latent_size = 200

    def __init__(self, entry_jitter: float = 0.0, power: float = 0.85) -> None:
        super().__init__()
        self.entry = EntryShift(entry_jitter, power, first=ENTRY_LATENT["ecal25"]) if entry_jitter > 0 else None
        self.dense = _glorot_uniform(nn.Linear(self.latent_size, 64 * 7 * 7))
        self.block1 = nn.Sequential(
            same_pad((6, 6, 8)),
            _he_uniform(nn.Conv3d(8, 64, (6, 6, 8))),
            nn.LeakyReLU(LEAKY),
            keras_bn(64),
            nn.Upsample(scale_factor=(2, 2, 2), mode="nearest"),
        )
        self.block2 = nn.Sequential(
            pad3d(2, 2, 0),
            _he_uniform(nn.Conv3d(64, 6, (6, 5, 8))),
            nn.LeakyReLU(LEAKY),
            keras_bn(6),
            nn.Upsample(scale_factor=(2, 2, 3), mode="nearest"),
        )
        self.block3 = nn.Sequential(
            pad3d(1, 0, 3),
            _he_uniform(nn.Conv3d(6, 6, (3, 3, 8))),
            nn.LeakyReLU(LEAKY),
            _glorot_normal(nn.Conv3d(6, 1, (2, 2, 2), bias=False)),
            nn.ReLU(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # Keras Reshape((7, 7, 8, 8)) is channels-last; permute to channels-first.
        x = self.dense(z).view(-1, 7, 7, 8, 8).permute(0, 4, 1, 2, 3)
        out = self.block3(self.block2(self.block1(x))).squeeze(1)
        return out if self.entry is None else self.entry(out, z)


class AngleGenerator(nn.Module):
    """Variable-angle generator, 51x51x25 output; input is [E/100, theta (rad), 254 noise values]
    (the noise times E/E0 where the spec scales it, ``ModelSpec.noise_energy_gev``; built outside the module).

    ``entry_jitter`` > 0 (cells) ends it with an ``EntryShift`` driven by the first four noise values.
    ``angle_gain`` g > 0: the dense layer sees g (theta - pi/2) instead of theta (``ModelSpec.angle_gain``)."""

    latent_size = 256

    def __init__(self, entry_jitter: float = 0.0, power: float = 0.85, angle_gain: float = 0.0) -> None:
        super().__init__()
        self.angle_gain = float(angle_gain)
        self.entry = EntryShift(entry_jitter, power, first=ENTRY_LATENT["angle51"]) if entry_jitter > 0 else None
        self.dense = nn.Linear(self.latent_size, 5184)
        _glorot_uniform(self.dense)

        def block(cin: int, cout: int, kernel: tuple[int, int, int], pad: tuple[int, int, int] | None) -> list[nn.Module]:
            layers: list[nn.Module] = [pad3d(*pad)] if pad else []
            layers += [_he_uniform(nn.Conv3d(cin, cout, kernel)), nn.ReLU(), keras_bn(cout, eps=1e-6)]
            return layers

        self.body = nn.Sequential(
            nn.Upsample(scale_factor=(6, 6, 6), mode="nearest"),
            *block(8, 8, (6, 6, 8), None),
            *block(8, 6, (4, 4, 6), (2, 2, 1)),
            *block(6, 6, (4, 4, 6), (2, 2, 1)),
            *block(6, 6, (4, 4, 6), (2, 2, 1)),
            *block(6, 6, (3, 3, 5), (1, 1, 0)),
            pad3d(1, 1, 0),
            _he_uniform(nn.Conv3d(6, 6, (3, 3, 3))),
            nn.ReLU(),
            _glorot_normal(nn.Conv3d(6, 1, (2, 2, 2))),
            nn.ReLU(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        seen = z
        if self.angle_gain:
            seen = torch.cat([z[:, :1], self.angle_gain * (z[:, 1:2] - math.pi / 2), z[:, 2:]], 1)
        x = self.dense(seen).view(-1, 9, 9, 8, 8).permute(0, 4, 1, 2, 3)
        out = self.body(x).squeeze(1)
        return out if self.entry is None else self.entry(out, z)


def _angle_input(gain: float) -> tuple[float, float]:
    """(a, c) of the angle column the dense layer sees, a theta + c, at ``angle_gain`` ``gain``."""
    return (gain, -gain * math.pi / 2) if gain else (1.0, 0.0)


@torch.no_grad()
def regain_angle_input(generator: AngleGenerator, gain: float, optimizer: torch.optim.Optimizer | None = None
                       ) -> None:
    """Give ``generator`` the angle gain ``gain`` without changing what it computes: the dense layer's angle column
    and bias are refitted (W' a' = W a, b' = b + W c - W' c'), and the optimiser's per-weight statistics of that
    column rescaled with its gradients (second moments by (a'/a)^2, first moments by a'/a), so that a training run
    can change the gain between runs (``TrainConfig.angle_gain``)."""
    (a, c), (a2, c2) = _angle_input(generator.angle_gain), _angle_input(gain)
    weight, bias = generator.dense.weight, generator.dense.bias
    column = weight[:, 1].clone()
    weight[:, 1] = column * a / a2
    bias.add_(column * c - weight[:, 1] * c2)
    generator.angle_gain = float(gain)
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    for key, power in (("square_avg", 2), ("exp_avg_sq", 2), ("exp_avg", 1), ("momentum_buffer", 1)):
        if isinstance(state.get(key), torch.Tensor):
            state[key][:, 1] *= (a2 / a) ** power


def ecal_sum(image: torch.Tensor, power: float) -> torch.Tensor:
    """Analytic ECAL-sum head: total energy of the image after undoing the power transform."""
    return image.clamp_min(0).pow(1.0 / power).flatten(1).sum(1)


class EcalEnergyDiscriminator(nn.Module):
    """Fixed-angle discriminator: real/fake logit, E/100 regression, analytic ECAL sum."""

    def __init__(self, power: float = 0.85, dropout: float = 0.2) -> None:
        super().__init__()
        self.power = power
        self.features = nn.Sequential(
            same_pad((5, 5, 5)), _glorot_uniform(nn.Conv3d(1, 32, 5)), nn.LeakyReLU(LEAKY), nn.Dropout(dropout),
            pad3d(2, 2, 2), _glorot_uniform(nn.Conv3d(32, 8, 5)), nn.LeakyReLU(LEAKY), keras_bn(8), nn.Dropout(dropout),
            pad3d(2, 2, 2), _glorot_uniform(nn.Conv3d(8, 8, 5)), nn.LeakyReLU(LEAKY), keras_bn(8), nn.Dropout(dropout),
            pad3d(1, 1, 1), _glorot_uniform(nn.Conv3d(8, 8, 5)), nn.LeakyReLU(LEAKY), keras_bn(8), nn.Dropout(dropout),
            nn.AvgPool3d(2),
            nn.Flatten(),
        )
        self.generation = _glorot_uniform(nn.Linear(10_648, 1))
        self.auxiliary = _glorot_uniform(nn.Linear(10_648, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(image.unsqueeze(1))
        return {
            "logit": self.generation(h).squeeze(1),
            "energy": self.auxiliary(h).squeeze(1),
            "ecal": ecal_sum(image, self.power),
        }


class AngleDiscriminator(nn.Module):
    """Variable-angle discriminator: real/fake logit, E/100 regression and ECAL sum (the reference's analytic angle
    head is not computed: no loss reads it, the angle term compares shower tilts, ``train.losses.shower_tilt``)."""

    def __init__(self, power: float = 0.85, dropout: float = 0.2) -> None:
        super().__init__()
        self.power = power
        k = (5, 6, 6)
        self.features = nn.Sequential(
            same_pad(k), _glorot_uniform(nn.Conv3d(1, 16, k)), nn.LeakyReLU(LEAKY), nn.Dropout(dropout),
            pad3d(0, 0, 1), _glorot_uniform(nn.Conv3d(16, 8, k)), nn.LeakyReLU(LEAKY), keras_bn(8, 1e-6),
            nn.Dropout(dropout),
            pad3d(0, 0, 1), _glorot_uniform(nn.Conv3d(8, 8, k)), nn.LeakyReLU(LEAKY), keras_bn(8, 1e-6),
            nn.Dropout(dropout),
            _glorot_uniform(nn.Conv3d(8, 8, k)), nn.LeakyReLU(LEAKY), keras_bn(8, 1e-6), nn.Dropout(dropout),
            nn.AvgPool3d(2),
            nn.Flatten(),
        )
        self.generation = _glorot_uniform(nn.Linear(19_152, 1))
        self.auxiliary = _glorot_uniform(nn.Linear(19_152, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(image.unsqueeze(1))
        return {
            "logit": self.generation(h).squeeze(1),
            "energy": self.auxiliary(h).squeeze(1),
            "ecal": ecal_sum(image, self.power),
        }


def count_parameters(module: nn.Module, *, include_buffers: bool = True) -> int:
    """Parameters plus (optionally) BatchNorm moving statistics, the way Keras totals count them."""
    n = sum(p.numel() for p in module.parameters())
    if include_buffers:
        n += sum(b.numel() for name, b in module.named_buffers() if not name.endswith("num_batches_tracked"))
    return n
