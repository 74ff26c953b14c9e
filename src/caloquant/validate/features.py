"""Per-shower physics features, computed chunk by chunk with vectorized numpy so large files fit in memory.

A large sample's per-shower features (2.5 KiB a shower for 25x25x25) are spilled to a temporary file
(``caloquant.validate.store``) and every metric reads them back a block of showers at a time, so validation
memory does not grow with the number of showers; energies and angles stay in memory.

Coordinates: cell i of an axis with n cells sits at (i - (n-1)/2) * cell_mm from the window centre (mm);
3DGAN moments use plain cell indices from 0. Depth of layer l is the middle of its slab in
``CLIC_ECAL.layer_edges_mm``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from caloquant.data.formats import ShowerFile, ShowerSet
from caloquant.data.shards import ShowerFiles, open_showers
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError
from caloquant.geometry import CLIC_ECAL, Window
from caloquant.ui import progress_bar
from caloquant.validate.store import DiskArray

#: Log-spaced cell-energy bins (GeV) of the per-shower cell spectrum; values outside are clipped to the ends.
CELL_LOG10_RANGE = (-7.0, 1.0)
CELL_BINS = 64
CELL_EDGES = np.logspace(*CELL_LOG10_RANGE, CELL_BINS + 1)
#: Cells per chunk (about 64 MB of float32) when the caller gives no chunk size.
CHUNK_CELLS = 16_000_000
#: A sample whose per-shower features take more bytes than this keeps them on disk (``spill=None``).
SPILL_BYTES = 32 * 1024 * 1024
#: Showers per block when metrics stream a sample's features (``ShowerFeatures.blocks``).
BLOCK_SHOWERS = 4096
_EPS = 1e-16

Source = ShowerSet | ShowerFile | ShowerFiles | str | os.PathLike[str]


class _MemoryStore:
    """Per-shower arrays held in memory (name -> (N, k) array)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.arrays.items()}

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}


class _DiskStore:
    """Per-shower arrays spilled to one float64 DiskArray, side by side in ``layout`` (name -> columns, dtype)."""

    def __init__(self, layout: dict[str, tuple[slice, np.dtype]], n: int) -> None:
        self.layout = layout
        self.disk = DiskArray((n, max(c.stop for c, _ in layout.values())), np.float64)

    def _split(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {k: block[:, cols].astype(dtype, copy=dtype != np.float64) for k, (cols, dtype) in self.layout.items()}

    def write(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        n = len(next(iter(arrays.values())))
        block = np.empty((n, self.disk.shape[1]), dtype=np.float64)
        for k, (cols, _) in self.layout.items():
            block[:, cols] = arrays[k].reshape(n, -1)
        self.disk.write_rows(start, block)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return self._split(self.disk.read_rows(start, stop))

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return self._split(self.disk.take(index))


@dataclass(eq=False)
class ShowerFeatures:
    """Per-shower features of one sample; every array has one row per shower (float64 unless noted).

    Lengths in mm relative to the window centre; energies in GeV. ``image_sum`` (x, y, z) is the summed
    shower image of the whole sample (for average images); subsets drop it.

    ``energy`` and ``theta`` are held in memory; the other per-shower arrays (``profile_x`` ... ``cell_hist``)
    live in a store: in memory for small samples, in a temporary file for large ones (``spilled``). Reading
    one of them from a spilled sample loads it whole; metrics use ``blocks()`` instead.
    """

    window: Window
    energy: np.ndarray
    theta: np.ndarray
    store: _MemoryStore | _DiskStore = field(repr=False)
    image_sum: np.ndarray | None = None
    threshold: float = 0.0
    source: str = ""
    #: Rows of a spilled store that this sample is made of (None: all, in order).
    rows_of_store: np.ndarray | None = field(default=None, repr=False)
    #: The ``tilted`` of the whole sample, carried by its blocks (None: from this sample's angles).
    sample_tilted: bool | None = field(default=None, repr=False)

    @classmethod
    def from_arrays(cls, window: Window, arrays: dict[str, np.ndarray], *, image_sum: np.ndarray | None = None,
                    threshold: float = 0.0, source: str = "", sample_tilted: bool | None = None) -> ShowerFeatures:
        """Features held in memory, from one array per name of ``PER_SHOWER``."""
        rest = {k: arrays[k] for k in _STORED}
        return cls(window, arrays["energy"], arrays["theta"], _MemoryStore(rest), image_sum, threshold, source,
                   sample_tilted=sample_tilted)

    @property
    def spilled(self) -> bool:
        """True when the per-shower arrays are kept in a temporary file."""
        return isinstance(self.store, _DiskStore)

    def _arrays(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if self.rows_of_store is None:
            return self.store.read(start, stop)
        return self.store.take(self.rows_of_store[start:stop])

    def _column(self, name: str) -> np.ndarray:
        if isinstance(self.store, _MemoryStore) and self.rows_of_store is None:
            return self.store.arrays[name]
        parts = [self._arrays(s, e)[name] for s, e in _ranges(len(self), BLOCK_SHOWERS)]
        return np.concatenate(parts) if parts else self._arrays(0, 0)[name]

    def rows(self, start: int, stop: int) -> ShowerFeatures:
        """Showers start .. stop as features held in memory (views of an in-memory sample); the summed image is
        dropped, ``tilted`` is the whole sample's."""
        return ShowerFeatures(self.window, self.energy[start:stop], self.theta[start:stop],
                              _MemoryStore(self._arrays(start, stop)), None, self.threshold, self.source,
                              sample_tilted=self.tilted)

    def blocks(self, size: int | None = None) -> Iterator[tuple[int, int, ShowerFeatures]]:
        """(start, stop, features of those showers) for consecutive blocks of ``size`` showers (BLOCK_SHOWERS);
        one empty block for an empty sample. Memory holds one block at a time."""
        for start, stop in _ranges(len(self), size or BLOCK_SHOWERS) or [(0, 0)]:
            yield start, stop, self.rows(start, stop)

    @property
    def profile_x(self) -> np.ndarray:
        return self._column("profile_x")

    @property
    def profile_y(self) -> np.ndarray:
        return self._column("profile_y")

    @property
    def profile_z(self) -> np.ndarray:
        return self._column("profile_z")

    @property
    def layer_ec_x(self) -> np.ndarray:
        return self._column("layer_ec_x")

    @property
    def layer_ec_y(self) -> np.ndarray:
        return self._column("layer_ec_y")

    @property
    def layer_width_x(self) -> np.ndarray:
        return self._column("layer_width_x")

    @property
    def layer_width_y(self) -> np.ndarray:
        return self._column("layer_width_y")

    @property
    def layer_ec_r(self) -> np.ndarray:
        return self._column("layer_ec_r")

    @property
    def layer_width_r(self) -> np.ndarray:
        return self._column("layer_width_r")

    @property
    def layer_sparsity(self) -> np.ndarray:
        return self._column("layer_sparsity")

    @property
    def cell_hist(self) -> np.ndarray:
        """(N, CELL_BINS) int32 counts of non-empty cells."""
        return self._column("cell_hist")

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    @property
    def visible(self) -> np.ndarray:
        """Visible (summed cell) energy per shower, GeV."""
        return np.asarray(self.profile_z.sum(axis=1))

    @property
    def sampling_fraction(self) -> np.ndarray:
        """Visible / primary energy."""
        return np.asarray(self.visible / self.energy)

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
        return np.asarray(np.pi / 2 - np.arctan(slope))

    @cached_property
    def tilted(self) -> bool:
        """True when the sample holds non-perpendicular showers."""
        if self.sample_tilted is not None:
            return self.sample_tilted
        return bool(np.any(np.abs(self.theta - np.pi / 2) > 1e-3))

    def high_level_names(self) -> list[str]:
        """Names of the columns of ``high_level()``."""
        names = ["sampling_fraction", "mu_x", "mu_y", "mu_z", "sigma2_x", "sigma2_y", "sigma2_z"]
        for stem in ("log10_E_layer", "ec_x", "ec_y", "width_x", "width_y", "ec_r", "width_r", "sparsity"):
            names += [f"{stem}[{k}]" for k in range(self.window.nz)]
        if self.tilted:
            names.append("theta_estimate_deg")
        return names

    def high_level(self) -> tuple[np.ndarray, list[str]]:
        """Histogrammed high-level features (N, F) and their names: SF, moments, per-layer shapes, angle."""
        cols = [self.sampling_fraction[:, None], self.moments,
                np.log10(self.profile_z + 1e-8), self.layer_ec_x, self.layer_ec_y, self.layer_width_x,
                self.layer_width_y, self.layer_ec_r, self.layer_width_r, self.layer_sparsity]
        if self.tilted:
            cols.append(np.rad2deg(self.theta_estimate)[:, None])
        return np.concatenate(cols, axis=1), self.high_level_names()

    def high_level_quantiles(self, q: Sequence[float]) -> np.ndarray:
        """Quantiles (len(q), F) of every column of ``high_level()`` (those of ``np.quantile(..., axis=0)``).

        A spilled sample writes its high-level features column by column to a temporary file, a block of
        showers at a time, and takes the quantiles of one column at a time.
        """
        if not self.spilled:
            return np.asarray(np.quantile(self.high_level()[0], q, axis=0))
        names = self.high_level_names()
        columns = DiskArray((len(names), len(self)), np.float64)
        try:
            for start, _, block in self.blocks():
                columns.write_cols(start, block.high_level()[0].T)
            return np.stack([np.quantile(columns.read_rows(j, j + 1)[0], q) for j in range(len(names))], axis=1)
        finally:
            columns.close()

    def classifier_vector(self) -> np.ndarray:
        """CaloChallenge 'cls-high' vector (plus theta): log10 E_inc, theta, log10 E_layer, shapes/100, sparsity."""
        cols = [np.log10(self.energy)[:, None], self.theta[:, None], np.log10(self.profile_z + 1e-8),
                self.layer_ec_x / 100, self.layer_ec_y / 100, self.layer_width_x / 100, self.layer_width_y / 100,
                np.log10(self.visible + 1e-8)[:, None], self.layer_sparsity, self.layer_ec_r / 100,
                self.layer_width_r / 100]
        return np.concatenate(cols, axis=1)

    def subset(self, index: np.ndarray | slice) -> ShowerFeatures:
        """The features of a subset of showers (the summed image is dropped). A subset of a spilled sample
        shares its store (it holds the row numbers only)."""
        if isinstance(self.store, _DiskStore):
            rows = np.arange(len(self)) if self.rows_of_store is None else self.rows_of_store
            return ShowerFeatures(self.window, self.energy[index], self.theta[index], self.store, None,
                                  self.threshold, self.source, rows_of_store=rows[index])
        kw = {name: getattr(self, name)[index] for name in PER_SHOWER}
        return ShowerFeatures.from_arrays(self.window, kw, threshold=self.threshold, source=self.source)

    def halves(self, seed: int = 0) -> tuple[ShowerFeatures, ShowerFeatures]:
        """Two disjoint random halves (for the noise floor)."""
        n = len(self)
        if n < 4:
            raise InputError(f"{self.source or 'sample'}: {n} showers are too few to split for a noise floor")
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[: n // 2])), self.subset(np.sort(perm[n // 2: 2 * (n // 2)]))


#: The per-shower arrays of ShowerFeatures; all but energy and theta are kept in its store.
PER_SHOWER = ("energy", "theta", "profile_x", "profile_y", "profile_z", "layer_ec_x", "layer_ec_y",
              "layer_width_x", "layer_width_y", "layer_ec_r", "layer_width_r", "layer_sparsity", "cell_hist")
_STORED = PER_SHOWER[2:]


def _ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + size)) for start in range(0, n, max(1, size))]


def _layout(window: Window) -> dict[str, tuple[slice, np.dtype]]:
    """Columns of each stored array in a spilled store's rows."""
    widths = {"profile_x": window.nx, "profile_y": window.ny, "cell_hist": CELL_BINS}
    out, col = {}, 0
    for name in _STORED:
        width = widths.get(name, window.nz)
        out[name] = (slice(col, col + width), np.dtype(np.int32 if name == "cell_hist" else np.float64))
        col += width
    return out


def spill_size(window: Window) -> int:
    """The number of showers above which a sample's features are spilled to disk (``spill=None``)."""
    row_bytes = 8 * sum(int(c.stop) - int(c.start) for c, _ in _layout(window).values())
    return max(1, SPILL_BYTES // row_bytes)


def normalised_vectors(reference: ShowerFeatures, candidate: ShowerFeatures
                       ) -> tuple[np.ndarray | DiskArray, np.ndarray | DiskArray]:
    """Both samples' ``classifier_vector()`` divided by the reference's max |value| per column, as float32 (the
    inputs of FPD and KPD: ``distances.normalise_by_reference`` then ``astype(np.float32)``, to the bit).

    Computed a block at a time; a spilled sample's rows go to a temporary file (a DiskArray).
    """
    scale: np.ndarray | None = None
    for f in (reference, candidate):
        if len(f) < 2:
            raise InputError("FPD/KPD need at least 2 showers per sample")
    for _, _, block in reference.blocks():
        x = block.classifier_vector()
        _check_finite(x)
        top = np.max(np.abs(x), axis=0) if len(x) else np.zeros(x.shape[1])
        scale = top if scale is None else np.maximum(scale, top)
    assert scale is not None
    scale = np.where(scale > 0, scale, 1.0)
    out: list[np.ndarray | DiskArray] = []
    for f in (reference, candidate):
        rows: np.ndarray | DiskArray | None = None
        for start, stop, block in f.blocks():
            x = block.classifier_vector()
            _check_finite(x)
            if rows is None:
                shape = (len(f), x.shape[1])
                rows = DiskArray(shape, np.float32) if f.spilled else np.empty(shape, dtype=np.float32)
            v = (x / scale).astype(np.float32)
            if isinstance(rows, DiskArray):
                rows.write_rows(start, v)
            else:
                rows[start:stop] = v
        assert rows is not None
        out.append(rows)
    return out[0], out[1]


def _check_finite(x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        raise InputError("FPD/KPD features contain NaN or infinite values")


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
    spill: bool | None = None,
) -> ShowerFeatures:
    """Features of every shower of a ShowerSet or file (either layout), read in chunks of ``chunk_size``.

    ``threshold`` (GeV): cells at or below it count as empty for sparsity and the cell spectrum. ``spill``:
    keep the per-shower arrays in a temporary file (True), in memory (False), or decide by size (None: on disk
    above ``SPILL_BYTES``, ``spill_size(window)`` showers). The values are the same either way.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_showers(source) as f:
            return compute_features(f, max_showers=max_showers, chunk_size=chunk_size, threshold=threshold,
                                    progress=progress, spill=spill)
    chunks, window, n, name = _chunks(source, max_showers, chunk_size)
    disk = _DiskStore(_layout(window), n) if (spill if spill is not None else n > spill_size(window)) else None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (PER_SHOWER[:2] if disk else PER_SHOWER)}
    image = np.zeros(window.shape, dtype=np.float64)
    done = 0
    with progress_bar(n, f"features {name}", enabled=progress) as advance:
        for chunk in chunks:
            ecal = np.ascontiguousarray(chunk.ecal, dtype=np.float32)
            feats = _chunk_features(ecal, threshold)
            if not np.all(np.isfinite(feats["profile_z"])):
                raise DataFormatError(f"{name}: shower energies contain NaN or infinite values")
            if not (np.all(np.isfinite(chunk.energy)) and np.all(chunk.energy > 0)):
                raise DataFormatError(f"{name}: primary energies must be finite and positive")
            feats["energy"], feats["theta"] = chunk.energy, chunk.theta
            for k in parts:
                parts[k].append(feats[k])
            if disk is not None:
                disk.write(done, feats)
            image += ecal.sum(axis=0, dtype=np.float64)
            done += len(chunk)
            advance(len(chunk))
    if n == 0:
        raise DataFormatError(f"{name}: no showers")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if disk is not None:
        return ShowerFeatures(window, arrays["energy"], arrays["theta"], disk, image, threshold, name)
    return ShowerFeatures.from_arrays(window, arrays, image_sum=image, threshold=threshold, source=name)


def as_features(sample: ShowerFeatures | Source, *, max_showers: int | None = None,
                threshold: float | None = None) -> ShowerFeatures:
    """Features of ``sample``, computing them (cells above ``threshold`` GeV count as hit; None: 0) unless it
    already is a ShowerFeatures, which must then have been computed with ``threshold`` when one is given."""
    if isinstance(sample, ShowerFeatures):
        if threshold is not None and sample.threshold != threshold:
            raise InputError(f"{sample.source}: features computed with cell threshold {sample.threshold:g} GeV, "
                             f"asked for {threshold:g} GeV")
        return sample if max_showers is None else sample.subset(slice(0, max_showers))
    return compute_features(sample, max_showers=max_showers, threshold=threshold or 0.0)


def check_compatible(reference: ShowerFeatures, candidate: ShowerFeatures) -> None:
    """Raise GeometryMismatchError when two samples use different readout windows."""
    if reference.window != candidate.window:
        raise GeometryMismatchError(
            f"{candidate.source or 'candidate'} uses window {candidate.window} but "
            f"{reference.source or 'reference'} uses {reference.window}"
        )
