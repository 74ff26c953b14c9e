"""A light critic for CPU adversarial training, and the differentiable physics features it shares with the losses.

The reference 3DGAN discriminator spends 1.57 GFLOP per shower (forward), almost all in a full-resolution
32 -> 8 channel 5x5x5 convolution. ``LightCritic`` sees the same shower through three cheap views:

* a 3-D convolution stack on the log-compressed image, its 2x2x2 cell blocks folded into 8 channels
  (``space_to_depth``), then stride 2 down to 4x4x4: it sees the cell-level pattern (which cells fire, how
  they cluster);
* a head on physics features (``shower_features``): visible energy / E_p, per-layer energy fractions and
  lateral widths, soft cell counts at five thresholds and the sorted cell spectrum, the quantities whose
  distributions a validation compares;
* the condition (E_p, and theta for the angle model), joined only in the real/fake head, so that the auxiliary
  energy regression must still read the energy off the shower (as in the reference).

It returns the reference heads the trainer's critic terms use (``logit``, ``energy``, analytic ``ecal``), so the
3DGAN loss terms apply unchanged; the angle term needs no critic (``train.losses.shower_tilt``). About 2 % of the
reference discriminator's FLOPs (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from caloquant.models.gan3d import ecal_sum

#: Cell energies (GeV) at which ``shower_features`` counts fired cells (soft counts, tanh(x / t)).
COUNT_THRESHOLDS_GEV = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: Ranks (0-based) of the sorted cell spectrum that ``shower_features`` reads: 1, 2, 4, ... 2048th hottest cell.
SPECTRUM_RANKS = tuple(2**j - 1 for j in range(12))


def feature_count(nz: int) -> int:
    """Length of the ``shower_features`` vector for a window of ``nz`` layers."""
    return 1 + 3 * nz + 6 + len(COUNT_THRESHOLDS_GEV) + len(SPECTRUM_RANKS)


def shower_features(images: torch.Tensor, energy: torch.Tensor, xscale: float, xpower: float) -> torch.Tensor:
    """Differentiable per-shower physics features (N, F) of showers in the training representation.

    ``images`` (N, X, Y, Z) hold (xscale * E_cell) ** xpower, ``energy`` is E_p / 100. Columns, each O(1):
    log visible fraction; log per-layer energy fractions (Z); per-layer x and y widths in cells (2Z); shower
    x, y, z barycentres and widths relative to the window (6); log soft counts of cells above each of
    ``COUNT_THRESHOLDS_GEV``; log values of the ``SPECTRUM_RANKS`` hottest cells. Computed in fp32.
    """
    x = images.float()
    n, nx, ny, nz = x.shape
    e = x.clamp_min(0).pow(1.0 / xpower)  # xscale * GeV
    total = e.flatten(1).sum(1).clamp_min(1e-6)
    cols = [torch.log(total / (xscale * 100.0 * energy.float().clamp_min(1e-6))).view(-1, 1)]
    layer = e.sum((1, 2))  # (N, Z)
    cols.append(torch.log(layer / total.view(-1, 1) + 1e-5))
    safe_layer = layer.clamp_min(1e-6)
    for axis_sum, size in ((e.sum(2), nx), (e.sum(1), ny)):  # (N, X, Z) and (N, Y, Z)
        idx = torch.arange(size, device=x.device, dtype=e.dtype).view(1, -1, 1)
        mu = (axis_sum * idx).sum(1) / safe_layer
        var = (axis_sum * idx**2).sum(1) / safe_layer - mu**2
        cols.append(torch.sqrt(var.clamp_min(0) + 1e-4))
    for sums, size in ((e.sum((2, 3)), nx), (e.sum((1, 3)), ny), (layer, nz)):
        idx = torch.arange(size, device=x.device, dtype=e.dtype).view(1, -1)
        mu = (sums * idx).sum(1) / total
        var = (sums * (idx - mu.view(-1, 1)) ** 2).sum(1) / total
        cols += [(mu / size - 0.5).view(-1, 1), (torch.sqrt(var + 1e-4) / size).view(-1, 1)]
    cols.append(torch.log1p(soft_cell_counts(x, xscale, xpower)))
    flat = x.flatten(1).clamp_min(0)
    k = min(SPECTRUM_RANKS[-1] + 1, flat.shape[1])
    top = torch.topk(flat, k, dim=1, sorted=True).values
    ranks = torch.tensor([min(r, k - 1) for r in SPECTRUM_RANKS], device=x.device)
    cols.append(torch.log(top[:, ranks] + 1e-3))
    return torch.cat(cols, 1)


def soft_cell_counts(images: torch.Tensor, xscale: float, xpower: float) -> torch.Tensor:
    """Differentiable counts (N, len(COUNT_THRESHOLDS_GEV)) of the cells above each threshold of showers in the
    training representation: the sum over cells of tanh(x / t), so a cell well above t counts 1 and a fainter one
    a fraction (in fp32)."""
    flat = images.float().flatten(1).clamp_min(0)
    return torch.stack([torch.tanh(flat / (xscale * t) ** xpower).sum(1) for t in COUNT_THRESHOLDS_GEV], 1)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(N, X, Y, Z) -> (N, 8, X/2, Y/2, Z/2): each 2x2x2 block of cells becomes 8 channels (odd sizes are
    zero-padded). Keeps every cell visible to the first convolution while avoiding a one-channel full-resolution
    convolution, whose oneDNN backward pass is slow on CPU."""
    n, nx, ny, nz = x.shape
    x = nn.functional.pad(x, (0, nz % 2, 0, ny % 2, 0, nx % 2))
    hx, hy, hz = (nx + 1) // 2, (ny + 1) // 2, (nz + 1) // 2
    x = x.reshape(n, hx, 2, hy, 2, hz, 2).permute(0, 2, 4, 6, 1, 3, 5)
    return x.reshape(n, 8, hx, hy, hz)


class LightCritic(nn.Module):
    """Conditional critic at a few percent of the reference discriminator's cost (module docstring)."""

    feat_mean: torch.Tensor
    feat_scale: torch.Tensor

    def __init__(self, shape: tuple[int, int, int], *, xscale: float = 100.0, power: float = 0.85,
                 angle: bool = False, width: int = 64) -> None:
        super().__init__()
        self.shape, self.xscale, self.power, self.angle = tuple(shape), xscale, power, angle
        act = nn.LeakyReLU(0.2)
        self.volume = nn.Sequential(
            nn.Conv3d(8, 16, 3, padding=1), act,
            nn.Conv3d(16, 32, 3, stride=2, padding=1), act,
            nn.Conv3d(32, 32, 3, stride=2, padding=1), act,
            nn.AdaptiveAvgPool3d(2), nn.Flatten(), nn.Linear(32 * 8, width), act,
        )
        n_feat = feature_count(shape[2])
        # fixed standardisation of the physics features, set once from real showers (``fit_features``)
        self.register_buffer("feat_mean", torch.zeros(n_feat))
        self.register_buffer("feat_scale", torch.ones(n_feat))
        self.physics = nn.Sequential(nn.Linear(n_feat, 2 * width), act, nn.Linear(2 * width, width), act)
        n_cond = 3 if angle else 2
        self.head = nn.Sequential(nn.Linear(2 * width + n_cond, 2 * width), act, nn.Linear(2 * width, 1))
        self.auxiliary = nn.Linear(2 * width, 1)

    def features(self, image: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Standardised physics features (N, F)."""
        f = shower_features(image, energy, self.xscale, self.power)
        return (f - self.feat_mean) / self.feat_scale

    @torch.no_grad()
    def fit_features(self, image: torch.Tensor, energy: torch.Tensor) -> None:
        """Set the feature standardisation from a sample of real showers (once, before training)."""
        f = shower_features(image, energy, self.xscale, self.power)
        self.feat_mean.copy_(f.mean(0))
        self.feat_scale.copy_(f.std(0).clamp_min(1e-2))

    def forward(self, image: torch.Tensor, energy: torch.Tensor, theta: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        h = torch.cat([self.volume(space_to_depth(torch.log1p(image.clamp_min(0)))),
                       self.physics(self.features(image, energy).to(image.dtype))], 1)
        cond = [torch.log(energy.clamp_min(1e-6)).view(-1, 1), energy.view(-1, 1)]
        if self.angle:
            assert theta is not None, "the angle critic needs theta"
            cond.append((theta - math.pi / 2).view(-1, 1))
        return {
            "logit": self.head(torch.cat([h, torch.cat(cond, 1).to(h.dtype)], 1)).squeeze(1),
            "energy": self.auxiliary(h).squeeze(1),
            "ecal": ecal_sum(image, self.power),
        }
