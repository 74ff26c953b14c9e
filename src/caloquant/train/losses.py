"""Loss terms of the 3DGAN game (gan3d.md section 2) and caloquant's physics term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mape(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras mean_absolute_percentage_error: 100 * mean |t - p| / max(|t|, 1e-7)."""
    return 100.0 * ((target - pred).abs() / target.abs().clamp_min(1e-7)).mean()


def bce_logits(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the real/fake head (logits, numerically safer than sigmoid + log)."""
    return F.binary_cross_entropy_with_logits(logit, labels)


def shower_moments(images: torch.Tensor, xpower: float) -> torch.Tensor:
    """Per-shower 1st and 2nd moments along x, y, z (3DGAN definitions), shape (N, 6), of the GeV-like image."""
    e = images.clamp_min(0).pow(1.0 / xpower)
    total = e.flatten(1).sum(1).clamp_min(1e-6)
    out = []
    for axes in ((2, 3), (1, 3), (1, 2)):  # profile along x, y, z
        prof = e.sum(axes)
        idx = torch.arange(prof.shape[1], device=e.device, dtype=e.dtype)
        mu = (prof * idx).sum(1) / total
        var = (prof * (idx.view(1, -1) - mu.view(-1, 1)) ** 2).sum(1) / total
        out += [mu, var]
    return torch.stack(out, 1)


def physics_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xpower: float,
                 groups: int) -> torch.Tensor:
    """Relative error of group-averaged moments, groups formed by sorting the batch in energy.

    This is the 3DGAN moment metric made differentiable at batch level: it matches conditional means
    without forcing each shower onto its real partner, so shower-to-shower fluctuations are kept.
    """
    order = torch.argsort(energy)
    mf, mr = shower_moments(fake, xpower)[order], shower_moments(real, xpower)[order]
    terms = []
    for idx in torch.tensor_split(torch.arange(len(order), device=fake.device), min(groups, len(order))):
        a, b = mf[idx].mean(0), mr[idx].mean(0)
        terms.append(((a - b).abs() / b.abs().clamp_min(1e-6)).mean())
    return torch.stack(terms).mean()
