"""Frechet and kernel physics distances (FPD, KPD) as defined by JetNet (Kansal et al., PRD 107, 076017).

Written from the published definitions: both samples divided by max|X| of the real sample per feature; FPD is
the Frechet distance extrapolated to infinite sample size with a straight-line fit in 1/N; KPD is the median of
unbiased MMD^2 estimates with the kernel (x.y/d + 1)^4.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize, stats

from caloquant.errors import InputError
from caloquant.validate.store import DiskArray

#: Rows of FPD/KPD inputs: an (N, d) array, or a DiskArray for samples kept on disk (rows gathered per draw).
Rows = np.ndarray | DiskArray


def normalise_by_reference(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide both samples by max|real| per feature (features whose maximum is 0 are left as they are)."""
    scale = np.max(np.abs(real), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return real / scale, gen / scale


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1-mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr sqrt(S1 S2) of two Gaussians.

    Tr sqrt(S1 S2) is the sum of square roots of the eigenvalues of L^T S2 L with S1 = L L^T (a matrix
    similar to S1 S2 and symmetric positive semi-definite): the same number as Tr sqrtm(S1 S2), found stably
    and about ten times faster. A singular S1 gets a 1e-10 relative diagonal jitter for the factorisation.
    """
    d = cov1.shape[0]
    jitter = 1e-10 * max(float(np.trace(cov1)) / d, 1e-300)
    try:
        chol = linalg.cholesky(cov1 + jitter * np.eye(d), lower=True)
    except linalg.LinAlgError:
        w, v = linalg.eigh(cov1)
        chol = v * np.sqrt(np.clip(w, 0.0, None))
    ev = linalg.eigvalsh(chol.T @ cov2 @ chol)
    tr_sqrt = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float32 products, float64 result)."""
    mu = x.mean(axis=0, dtype=np.float64)
    c = x - mu.astype(x.dtype)
    return mu, (c.T @ c).astype(np.float64) / (len(x) - 1)


def frechet_at_size(real: np.ndarray, gen: np.ndarray) -> float:
    """Frechet distance of the two whole samples (normalised by the reference) without FPD's 1/N
    extrapolation: biased upwards by O(1/N), cheap, and comparable between samples of one size."""
    real, gen = normalise_by_reference(*_check(real, gen))
    return frechet_distance(*_mean_cov(real), *_mean_cov(gen))


def _check(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, gen = np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise InputError(f"feature arrays must be (N, d) with equal d, got {real.shape} and {gen.shape}")
    if len(real) < 2 or len(gen) < 2:
        raise InputError("FPD/KPD need at least 2 showers per sample")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(gen))):
        raise InputError("FPD/KPD features contain NaN or infinite values")
    return real, gen


def fpd(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    min_samples: int = 10_000,
    max_samples: int = 50_000,
    num_batches: int = 20,
    num_points: int = 10,
    normalise: bool = True,
    seed: int = 42,
) -> tuple[float, float]:
    """Frechet physics distance and its fit error.

    Batch sizes regular in 1/N between min_samples and max_samples (both capped by the smaller sample:
    max = min(max_samples, n), min = min(min_samples, max/2)); per size, num_batches draws with replacement
    from each sample give a mean FD; FPD is the N -> infinity intercept of a fit a + b/N with a, b >= 0.
    """
    real, gen = _check(real, gen)
    if normalise:
        real, gen = normalise_by_reference(real, gen)
    return fpd_of_rows(real.astype(np.float32), gen.astype(np.float32), min_samples=min_samples,
                       max_samples=max_samples, num_batches=num_batches, num_points=num_points, seed=seed)


def _take(x: Rows, index: np.ndarray) -> np.ndarray:
    return x[index] if isinstance(x, np.ndarray) else x.take(index)


def fpd_of_rows(real: Rows, gen: Rows, *, min_samples: int = 10_000, max_samples: int = 50_000,
                num_batches: int = 20, num_points: int = 10, seed: int = 42) -> tuple[float, float]:
    """``fpd`` of float32 rows already checked and normalised (arrays, or DiskArrays whose draws are read from
    disk): the same draws, hence the same value, without holding a whole sample in memory."""
    if len(real) < 2 or len(gen) < 2:
        raise InputError("FPD/KPD need at least 2 showers per sample")
    n_max = min(max_samples, len(real), len(gen))
    n_min = max(2, min(min_samples, n_max // 2))
    sizes = (1.0 / np.linspace(1.0 / n_min, 1.0 / n_max, num_points)).astype(np.int64)
    rng = np.random.default_rng(seed)
    means = []
    for n in sizes:
        vals = []
        for _ in range(num_batches):
            mu_a, cov_a = _mean_cov(_take(real, rng.integers(0, len(real), n)))
            mu_b, cov_b = _mean_cov(_take(gen, rng.integers(0, len(gen), n)))
            vals.append(frechet_distance(mu_a, cov_a, mu_b, cov_b))
        means.append(np.mean(vals))
    x = 1.0 / sizes
    params, cov = optimize.curve_fit(lambda t, c, s: c + s * t, x, np.array(means),
                                     p0=(max(min(means), 0.0), 1.0), bounds=([0.0, 0.0], [np.inf, np.inf]))
    return float(params[0]), float(np.sqrt(max(cov[0, 0], 0.0)))


def _poly_kernel_sum(x: np.ndarray, y: np.ndarray, d: int, *, same: bool) -> float:
    """Sum of (x.y/d + 1)^4 over all pairs (without the diagonal when ``same``); float32 products,
    float64 sums."""
    k = x @ y.T
    k *= 1.0 / d
    k += 1.0
    np.square(k, out=k)
    np.square(k, out=k)
    return float(k.sum(dtype=np.float64) - (np.trace(k, dtype=np.float64) if same else 0.0))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the degree-4 polynomial kernel k(a, b) = (a.b/d + 1)^4."""
    m, n, d = len(x), len(y), x.shape[1]
    kxx = _poly_kernel_sum(x, x, d, same=True) / (m * (m - 1))
    kyy = _poly_kernel_sum(y, y, d, same=True) / (n * (n - 1))
    kxy = _poly_kernel_sum(x, y, d, same=False) / (m * n)
    return kxx + kyy - 2.0 * kxy


def kpd(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    num_batches: int = 10,
    batch_size: int = 5_000,
    normalise: bool = True,
    seed: int = 42,
) -> tuple[float, float]:
    """Kernel physics distance: median over batches of unbiased MMD^2, error half the 16.275-83.725 % range.

    Each batch draws min(batch_size, smaller sample) rows with replacement from each sample (seed + 1000 i).
    """
    real, gen = _check(real, gen)
    if normalise:
        real, gen = normalise_by_reference(real, gen)
    return kpd_of_rows(real.astype(np.float32), gen.astype(np.float32), num_batches=num_batches,
                       batch_size=batch_size, seed=seed)


def kpd_of_rows(real: Rows, gen: Rows, *, num_batches: int = 10, batch_size: int = 5_000, seed: int = 42
                ) -> tuple[float, float]:
    """``kpd`` of float32 rows already checked and normalised (arrays or DiskArrays), like ``fpd_of_rows``."""
    if len(real) < 2 or len(gen) < 2:
        raise InputError("FPD/KPD need at least 2 showers per sample")
    size = min(batch_size, len(real), len(gen))
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        vals.append(mmd2_unbiased(_take(real, rng.integers(0, len(real), size)),
                                  _take(gen, rng.integers(0, len(gen), size))))
    return float(np.median(vals)), float(stats.iqr(vals, rng=(16.275, 83.725)) / 2)
