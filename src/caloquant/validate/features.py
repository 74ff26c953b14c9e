"""Per-shower physics features, computed chunk by chunk with vectorized numpy so large files fit in memory.

Coordinates: cell i of an axis with n cells sits at (i - (n-1)/2) * cell_mm from the window centre (mm);
3DGAN moments use plain cell indices from 0. Depth of layer l is the middle of its slab in
``CLIC_ECAL.layer_edges_mm``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from caloquant.data.formats import ShowerFile, ShowerSet
from caloquant.data.shards import ShowerFiles, open_showers
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError
from caloquant.geometry import CLIC_ECAL, Window
from caloquant.ui import progress_bar

#: Log-spaced cell-energy bins (GeV) of the per-shower cell spectrum; values outside are clipped to the ends.
CELL_LOG10_RANGE = (-7.0, 1.0)
CELL_BINS = 64
CELL_EDGES = np.logspace(*CELL_LOG10_RANGE, CELL_BINS + 1)
#: Cells per chunk (about 64 MB of float32) when the caller gives no chunk size.
CHUNK_CELLS = 16_000_000
_EPS = 1e-16

Source = ShowerSet | ShowerFile | ShowerFiles | str | os.PathLike[str]


@dataclass
class ShowerFeatures:
    """Per-shower features of one sample; every array has one row per shower (float64 unless noted).

    Lengths in mm relative to the window centre; energies in GeV. ``image_sum`` (x, y, z) is the summed
    shower image of the whole sample (for average images); subsets drop it.
    """

    window: Window
    energy: np.ndarray
    theta: np.ndarray
    profile_x: np.ndarray
    profile_y: np.ndarray
    profile_z: np.ndarray
    layer_ec_x: np.ndarray
    layer_ec_y: np.ndarray
    layer_width_x: np.ndarray
    layer_width_y: np.ndarray
    layer_ec_r: np.ndarray
    layer_width_r: np.ndarray
    layer_sparsity: np.ndarray
    cell_hist: np.ndarray  # (N, CELL_BINS) int32 counts of non-empty cells
    image_sum: np.ndarray | None = None
    threshold: float = 0.0
    source: str = ""

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    @property
    def visible(self) -> np.ndarray:
        """Visible (summed cell) energy per shower, GeV."""
        return self.profile_z.sum(axis=1)

    @property
    def sampling_fraction(self) -> np.ndarray:
        """Visible / primary energy."""
        return self.visible / self.energy

    @property
    def layer_energy(self) -> np.ndarray:
        return self.profile_z

    @cached_property
    def moments(self) -> np.ndarray:
        """3DGAN moments (N, 6): mu_x, mu_y, mu_z, sigma2_x, sigma2_y, sigma2_z in cell indices from 0."""
        total = np.maximum(self.visible, _EPS)[:, None]
        mus, s2s = [], []
        for prof in (self.profile_x, self.profile_y, self.profile_z):
            i = np.arange(prof.shape[1], dtype=np.float64)
            mu = (prof @ i) / total[:, 0]
            mus.append(mu)
            s2s.append(((i[None, :] - mu[:, None]) ** 2 * prof).sum(axis=1) / total[:, 0])
        return np.stack(mus + s2s, axis=1)

    @cached_property
    def theta_estimate(self) -> np.ndarray:
        """Incidence angle (rad) from an energy-weighted line fit of per-layer x barycentres vs depth.

        The tilt is along x: x_bar(depth) = a + depth * cot(theta), so theta = pi/2 - arctan(slope).
        """
        edges = CLIC_ECAL.layer_edges_mm[: self.window.nz + 1]
        depth = 0.5 * (edges[:-1] + edges[1:])
        w = self.profile_z
        sw = np.maximum(w.sum(axis=1), _EPS)
        z_bar = (w @ depth) / sw
        x_bar = (w * self.layer_ec_x).sum(axis=1) / sw
        dz = depth[None, :] - z_bar[:, None]
        slope = (w * dz * (self.layer_ec_x - x_bar[:, None])).sum(axis=1) / np.maximum((w * dz**2).sum(axis=1), _EPS)
        return np.pi / 2 - np.arctan(slope)

    @property
    def tilted(self) -> bool:
        """True when the sample holds non-perpendicular showers."""
        return bool(np.any(np.abs(self.theta - np.pi / 2) > 1e-3))

    def high_level(self) -> tuple[np.ndarray, list[str]]:
        """Histogrammed high-level features (N, F) and their names: SF, moments, per-layer shapes, angle."""
        nz = self.window.nz
        cols = [self.sampling_fraction[:, None], self.moments,
                np.log10(self.profile_z + 1e-8), self.layer_ec_x, self.layer_ec_y, self.layer_width_x,
                self.layer_width_y, self.layer_ec_r, self.layer_width_r, self.layer_sparsity]
        names = ["sampling_fraction", "mu_x", "mu_y", "mu_z", "sigma2_x", "sigma2_y", "sigma2_z"]
        for stem in ("log10_E_layer", "ec_x", "ec_y", "width_x", "width_y", "ec_r", "width_r", "sparsity"):
            names += [f"{stem}[{k}]" for k in range(nz)]
        if self.tilted:
            cols.append(np.rad2deg(self.theta_estimate)[:, None])
            names.append("theta_estimate_deg")
        return np.concatenate(cols, axis=1), names

    def classifier_vector(self) -> np.ndarray:
        """CaloChallenge 'cls-high' vector (plus theta): log10 E_inc, theta, log10 E_layer, shapes/100, sparsity."""
        cols = [np.log10(self.energy)[:, None], self.theta[:, None], np.log10(self.profile_z + 1e-8),
                self.layer_ec_x / 100, self.layer_ec_y / 100, self.layer_width_x / 100, self.layer_width_y / 100,
                np.log10(self.visible + 1e-8)[:, None], self.layer_sparsity, self.layer_ec_r / 100,
                self.layer_width_r / 100]
        return np.concatenate(cols, axis=1)

    def subset(self, index: np.ndarray | slice) -> ShowerFeatures:
        """The features of a subset of showers (the summed image is dropped)."""
        kw = {name: getattr(self, name)[index] for name in _PER_SHOWER}
        return ShowerFeatures(window=self.window, image_sum=None, threshold=self.threshold,
                              source=self.source, **kw)

    def halves(self, seed: int = 0) -> tuple[ShowerFeatures, ShowerFeatures]:
        """Two disjoint random halves (for the noise floor)."""
        n = len(self)
        if n < 4:
            raise InputError(f"{self.source or 'sample'}: {n} showers are too few to split for a noise floor")
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[: n // 2])), self.subset(np.sort(perm[n // 2: 2 * (n // 2)]))


_PER_SHOWER = ("energy", "theta", "profile_x", "profile_y", "profile_z", "layer_ec_x", "layer_ec_y",
               "layer_width_x", "layer_width_y", "layer_ec_r", "layer_width_r", "layer_sparsity", "cell_hist")


def _chunk_features(ecal: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    n, nx, ny, nz = ecal.shape
    cell = CLIC_ECAL.cell_mm
    xs = (np.arange(nx) - (nx - 1) / 2) * cell
    ys = (np.arange(ny) - (ny - 1) / 2) * cell
    a = ecal.sum(axis=2, dtype=np.float64)  # (n, x, z)
    b = ecal.sum(axis=1, dtype=np.float64)  # (n, y, z)
    pz = a.sum(axis=1)
    den = pz + _EPS
    sx, sxx = np.einsum("nxz,x->nz", a, xs), np.einsum("nxz,x->nz", a, xs**2)
    sy, syy = np.einsum("nyz,y->nz", b, ys), np.einsum("nyz,y->nz", b, ys**2)
    r = np.sqrt(xs[:, None] ** 2 + ys[None, :] ** 2).reshape(-1).astype(np.float32)
    sr = np.matmul(r, ecal.reshape(n, nx * ny, nz)).astype(np.float64)
    ec_x, ec_y, ec_r = sx / den, sy / den, sr / den
    occupied = ecal > threshold
    n_cells = occupied.sum(axis=(1, 2))
    values = ecal[occupied]
    idx = np.floor((np.log10(np.maximum(values, 1e-30)) - CELL_LOG10_RANGE[0])
                   * (CELL_BINS / (CELL_LOG10_RANGE[1] - CELL_LOG10_RANGE[0]))).astype(np.int64)
    np.clip(idx, 0, CELL_BINS - 1, out=idx)
    owner = np.repeat(np.arange(n), n_cells.sum(axis=1))
    cell_hist = np.bincount(owner * CELL_BINS + idx, minlength=n * CELL_BINS).reshape(n, CELL_BINS)
    return {
        "profile_x": a.sum(axis=2), "profile_y": b.sum(axis=2), "profile_z": pz,
        "layer_ec_x": ec_x, "layer_ec_y": ec_y,
        "layer_width_x": np.sqrt(np.maximum(sxx / den - ec_x**2, 0.0)),
        "layer_width_y": np.sqrt(np.maximum(syy / den - ec_y**2, 0.0)),
        "layer_ec_r": ec_r,
        "layer_width_r": np.sqrt(np.maximum((sxx + syy) / den - ec_r**2, 0.0)),
        "layer_sparsity": 1.0 - n_cells / float(nx * ny),
        "cell_hist": cell_hist.astype(np.int32),
    }


def _chunks(source: Source, max_showers: int | None, chunk_size: int | None) -> tuple[Iterator[ShowerSet], Window,
                                                                                       int, str]:
    if isinstance(source, ShowerSet):
        window, n, name = source.window, len(source), "sample"
    elif isinstance(source, (ShowerFile, ShowerFiles)):
        window, n, name = source.window, len(source), str(source.path)
    else:
        raise InputError(f"expected a ShowerSet, ShowerFile or path, got {type(source).__name__}")
    if max_showers is not None:
        if max_showers <= 0:
            raise InputError(f"--max-showers must be positive, got {max_showers}")
        n = min(n, max_showers)
    step = chunk_size or max(1, CHUNK_CELLS // window.n_cells)

    def gen() -> Iterator[ShowerSet]:
        for start in range(0, n, step):
            stop = min(n, start + step)
            yield source[start:stop] if isinstance(source, ShowerSet) else source.read(start, stop)

    return gen(), window, n, name


def compute_features(
    source: Source,
    *,
    max_showers: int | None = None,
    chunk_size: int | None = None,
    threshold: float = 0.0,
    progress: bool = False,
) -> ShowerFeatures:
    """Features of every shower of a ShowerSet or file (either layout), read in chunks of ``chunk_size``.

    ``threshold`` (GeV): cells at or below it count as empty for sparsity and the cell spectrum.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_showers(source) as f:
            return compute_features(f, max_showers=max_showers, chunk_size=chunk_size, threshold=threshold,
                                    progress=progress)
    chunks, window, n, name = _chunks(source, max_showers, chunk_size)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _PER_SHOWER}
    image = np.zeros(window.shape, dtype=np.float64)
    with progress_bar(n, f"features {name}", enabled=progress) as advance:
        for chunk in chunks:
            ecal = np.ascontiguousarray(chunk.ecal, dtype=np.float32)
            feats = _chunk_features(ecal, threshold)
            if not np.all(np.isfinite(feats["profile_z"])):
                raise DataFormatError(f"{name}: shower energies contain NaN or infinite values")
            if not (np.all(np.isfinite(chunk.energy)) and np.all(chunk.energy > 0)):
                raise DataFormatError(f"{name}: primary energies must be finite and positive")
            feats["energy"], feats["theta"] = chunk.energy, chunk.theta
            for k in _PER_SHOWER:
                parts[k].append(feats[k])
            image += ecal.sum(axis=0, dtype=np.float64)
            advance(len(chunk))
    if n == 0:
        raise DataFormatError(f"{name}: no showers")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return ShowerFeatures(window=window, image_sum=image, threshold=threshold, source=name, **arrays)


def as_features(sample: ShowerFeatures | Source, *, max_showers: int | None = None) -> ShowerFeatures:
    """Features of ``sample``, computing them unless it already is a ShowerFeatures."""
    if isinstance(sample, ShowerFeatures):
        return sample if max_showers is None else sample.subset(slice(0, max_showers))
    return compute_features(sample, max_showers=max_showers)


def check_compatible(reference: ShowerFeatures, candidate: ShowerFeatures) -> None:
    """Raise GeometryMismatchError when two samples use different readout windows."""
    if reference.window != candidate.window:
        raise GeometryMismatchError(
            f"{candidate.source or 'candidate'} uses window {candidate.window} but "
            f"{reference.source or 'reference'} uses {reference.window}"
        )
