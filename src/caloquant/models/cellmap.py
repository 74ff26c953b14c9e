"""Cell-energy map: a fitted, monotone response stage that gives a generator's read-out cells the MC's spectrum.

A GAN learns the shower-level quantities (energy, moments, profiles) long before the population of its faintest
cells: the ecal25 campaign's generator reads out 0.84-0.88 of the MC's cells per shower, 0.4x the MC's peak of cells
at 0.3-0.5 MeV and 3-9x its cells just above the readout threshold (docs/training.md, twentieth ablation). The map
is the detector-response stage that fixes this after training, the way a readout calibration would:

    g_b(x) = S_mc,b^-1(S_gen,b(x)),

with S(x) the mean number of cells per shower above x, for showers of visible-energy band b. A generated cell keeps
its rank within its shower's spectrum and takes the energy the MC's cell of the same rank has; generated cells
whose rank the MC does not reach fall below the readout threshold, and faint cells the generator left below it rise
above it when the MC fires more. Bands are interpolated linearly in log visible energy (each g_b is monotone, so
their mixture is). The visible energy of every shower is then restored by one scale factor: the map changes the
shape of the spectrum, not the energy response (linearity, resolution and sampling fraction stay the generator's).

The map needs no parameters of the network: it lives in the ``ModelSpec`` (``cell_map``) and applies in
``ModelSpec.to_physical``, so every engine and precision decodes through it alike. Fit it with ``fit_cell_map`` on
generated showers decoded without a readout threshold and on MC showers independent of any comparison sample.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from caloquant.errors import ModelError
from caloquant.models.decode import decode

#: Log-energy offset (natural log) below the grid's first knot: the map of a ring without cells (all read 0).
_BELOW = 20.0
#: Knots of a fitted map (uniform in log cell energy).
KNOTS = 128
#: Default number of visible-energy bands.
BANDS = 6
#: Default inner edges (cells, lateral distance from the window's axis) of the rings mapped separately, and (layer
#: index) of the depth groups: a generator's faint cells lie elsewhere than the MC's, and one map for all moves
#: energy outwards and between layers. On the ecal25 campaign's step 57949 against 10,000 MC showers (docs/training.md,
#: twenty-first): one ring, lateral second moments +11 % and +9 %; these rings alone, moments 0.0121 but KPD 0.0033
#: (the first layers' occupancy and radii); these rings and groups, moments 0.0148, KPD 0.0020.
RINGS = (1.0, 2.5, 4.5, 6.5, 9.0, 12.0, 15.0)
DEPTHS = (3, 7)


def region_index(shape: tuple[int, ...], rings: tuple[float, ...], depths: tuple[int, ...]) -> np.ndarray:
    """Region of every cell of a window (X, Y, Z), flattened: ring (bounded by ``rings``, cells from the lateral
    axis) times depth group (bounded by ``depths``, layer indices), numbered ring * (len(depths) + 1) + group."""
    nx, ny, nz = shape
    x, y = np.meshgrid(np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2, indexing="ij")
    ring = np.asarray(np.searchsorted(np.asarray(rings, dtype=float), np.hypot(x, y), side="right"))
    group = np.asarray(np.searchsorted(np.asarray(depths, dtype=float), np.arange(nz), side="right"))
    return (ring[:, :, None] * (len(depths) + 1) + group[None, None, :]).ravel()


@dataclass(frozen=True)
class CellMap:
    """Monotone maps of cell energy per visible-energy band and region, on a grid uniform in ln(cell / GeV).

    ``table[b][r][k]`` is ln g_b,r(x_k) at x_k = exp(log_min + k * log_step) for region r (``region_index``: lateral
    rings bounded by ``ring_edges``, cells from the window's axis, times depth groups bounded by ``depth_edges``,
    layer indices); ``centres[b]`` is band b's centre in ln(visible energy / GeV), increasing. Cells below the grid
    read 0; above it they keep the last knot's ratio."""

    log_min: float
    log_step: float
    centres: tuple[float, ...]
    ring_edges: tuple[float, ...]
    depth_edges: tuple[int, ...]
    table: tuple[tuple[tuple[float, ...], ...], ...]

    def __post_init__(self) -> None:
        try:
            t = np.asarray(self.table, dtype=float)
        except ValueError:
            raise ModelError("cell map: the table is ragged") from None
        c = np.asarray(self.centres, dtype=float)
        edges = np.asarray(self.ring_edges, dtype=float)
        depths = np.asarray(self.depth_edges, dtype=float)
        regions = (len(edges) + 1) * (len(depths) + 1)
        if t.ndim != 3 or t.shape[0] != len(c) or t.shape[1] != regions or t.shape[0] < 1 or t.shape[2] < 2:
            raise ModelError(f"cell map: table of shape {t.shape} does not fit {len(c)} band centres and "
                             f"{regions} regions")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(c)) and np.all(np.isfinite(edges))
                and math.isfinite(self.log_min) and math.isfinite(self.log_step) and self.log_step > 0):
            raise ModelError("cell map: knots, centres, rings and grid must be finite (and the step positive)")
        if (np.any(np.diff(c) <= 0) or np.any(np.diff(edges) <= 0) or np.any(edges <= 0) or np.any(np.diff(depths) <= 0)
                or np.any(depths <= 0)):
            raise ModelError("cell map: band centres, ring and depth edges must increase (edges above 0)")
        if np.any(np.diff(t, axis=2) < 0):
            raise ModelError("cell map: every map must be monotone (non-decreasing)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the table travels as little-endian float32 in base64 (its values are float32 already)."""
        t = np.asarray(self.table, dtype="<f4")
        return {"log_min": self.log_min, "log_step": self.log_step, "centres": list(self.centres),
                "ring_edges": list(self.ring_edges), "depth_edges": list(self.depth_edges),
                "table_shape": list(t.shape), "table_f32": base64.b64encode(t.tobytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellMap:
        try:
            shape = tuple(int(k) for k in d["table_shape"])
            flat = np.frombuffer(base64.b64decode(d["table_f32"], validate=True), dtype="<f4")
            if len(shape) != 3 or flat.size != math.prod(shape):
                raise ValueError(f"{flat.size} table values for shape {shape}")
            table = flat.astype(np.float64).reshape(shape)
            return cls(float(d["log_min"]), float(d["log_step"]), tuple(float(c) for c in d["centres"]),
                       tuple(float(e) for e in d["ring_edges"]), tuple(int(e) for e in d["depth_edges"]),
                       tuple(tuple(tuple(row) for row in band.tolist()) for band in table))
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise ModelError(f"cell map is incomplete or malformed ({e})") from None

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The table (bands, regions, knots) and band centres as float64 arrays, built once per map."""
        return np.asarray(self.table, dtype=np.float64), np.asarray(self.centres, dtype=np.float64)

    def decode_args(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """The map's arguments of ``models.decode.decode`` for showers of window ``shape`` (X, Y, Z)."""
        table, centres = self._arrays
        return {"table": table, "log_min": self.log_min, "log_step": self.log_step, "centres": centres,
                "region": _regions(tuple(int(k) for k in shape), self.ring_edges, self.depth_edges)}

    def apply(self, cells: np.ndarray, threshold: float) -> np.ndarray:
        """Mapped cells (GeV, same shape) of showers ``cells`` (N, X, Y, Z) decoded without a readout threshold;
        cells below ``threshold`` read 0 and each shower keeps its visible energy (the sum of its cells above it)."""
        x = np.asarray(cells, dtype=np.float32)
        if x.ndim != 4:
            raise ModelError(f"cell map: showers must be (N, X, Y, Z), got shape {x.shape}")
        return decode(x, threshold=threshold, **self.decode_args(x.shape[1:]))


@lru_cache(maxsize=8)
def _regions(shape: tuple[int, int, int], rings: tuple[float, ...], depths: tuple[int, ...]) -> np.ndarray:
    """``region_index`` of a window, computed once per window and map layout (read-only)."""
    out = region_index(shape, rings, depths).astype(np.int64)
    out.setflags(write=False)
    return out


def _band_edges(log_visible: np.ndarray, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner band edges (equal-count quantiles) and band centres (medians) of the reference's ln visible energy."""
    q = np.quantile(log_visible, np.linspace(0.0, 1.0, bands + 1))
    centres = np.array([np.median(log_visible[(log_visible >= q[b]) & (log_visible <= q[b + 1])])
                        for b in range(bands)])
    return q[1:-1], centres


def _visible(cells: np.ndarray, threshold: float) -> np.ndarray:
    """Visible energy of each shower: the sum of its cells at or above the readout threshold."""
    flat = cells.reshape(len(cells), -1)
    return np.where(flat >= threshold, flat, 0.0).sum(1, dtype=np.float64)


def _matched_row(gen_cells: np.ndarray, n_gen: int, ref_cells: np.ndarray, n_ref: int, grid: np.ndarray,
                 log_min: float, min_cells: float) -> np.ndarray:
    """ln g(x) on ``grid`` for one band and region: the reference cell of the same rank per shower."""
    g_cells = np.sort(gen_cells)
    r_cells = np.sort(ref_cells)[::-1]
    s_gen = (len(g_cells) - np.searchsorted(g_cells, np.exp(grid), side="right")) / n_gen
    if len(r_cells) == 0:
        return np.full(len(grid), log_min - _BELOW)
    matched = np.interp(s_gen * n_ref, np.arange(1, len(r_cells) + 1), r_cells, left=r_cells[0], right=0.0)
    hit = np.nonzero(matched > 0)[0]
    if len(hit) == 0:
        return np.full(len(grid), log_min - _BELOW)
    row = np.log(np.maximum(matched, 1e-300))
    # ranks the MC does not reach: continue at slope 1 through (x*, faintest MC cell), x* where the generator has as
    # many cells per shower above it as the MC has read out, so that the threshold keeps the MC's count and maps of
    # neighbouring bands mix smoothly
    first = int(hit[0])
    x_star = np.interp(len(r_cells) / n_ref, s_gen[::-1], grid[::-1])
    row[:first] = grid[:first] + (math.log(float(r_cells[-1])) - x_star)
    ok = s_gen >= min_cells
    last = int(np.nonzero(ok)[0][-1]) if ok.any() else len(grid) - 1
    row[last + 1:] = grid[last + 1:] + (row[last] - grid[last])  # too few cells to match: keep the last ratio
    return np.maximum.accumulate(row)


def fit_cell_map(generated: np.ndarray, reference: np.ndarray, threshold: float, *, bands: int = BANDS,
                 rings: tuple[float, ...] = RINGS, depths: tuple[int, ...] = DEPTHS, knots: int = KNOTS,
                 decades_below: float = 2.0,
                 min_cells: float = 0.5) -> CellMap:
    """Fit the map of generated showers ``generated`` (GeV, (N, X, Y, Z), decoded *without* a readout threshold) to
    MC showers ``reference`` (GeV, read out through ``threshold``), per band of visible energy and region (lateral
    ring times depth group).

    The grid runs from ``decades_below`` decades under the threshold to the hottest reference cell. Where fewer than
    ``min_cells`` cells per shower of a region lie above a knot the quantiles are too noisy to match, and the map keeps
    the ratio it has at the last matched knot. Raises ModelError on samples too small or without cells."""
    if threshold <= 0:
        raise ModelError("the cell map needs a readout threshold above 0 GeV")
    if bands < 1 or knots < 2:
        raise ModelError(f"cell map needs at least 1 band and 2 knots (got {bands}, {knots})")
    gen = np.asarray(generated, dtype=np.float32)
    ref = np.asarray(reference, dtype=np.float32)
    if gen.ndim != 4 or gen.shape[1:] != ref.shape[1:]:
        raise ModelError(f"cell map: generated showers {gen.shape[1:]} and reference ones {ref.shape[1:]} must "
                         "share one (X, Y, Z) window")
    if min(len(gen), len(ref)) < 20 * bands:
        raise ModelError(f"cell map: {len(gen)} generated and {len(ref)} reference showers are too few for "
                         f"{bands} bands (20 per band at least)")
    vis_gen, vis_ref = _visible(gen, threshold), _visible(ref, threshold)
    if np.any(vis_ref <= 0) or np.any(vis_gen <= 0):
        raise ModelError("cell map: some showers have no cell above the readout threshold")
    inner, centres = _band_edges(np.log(vis_ref), bands)
    log_min = math.log(threshold) - decades_below * math.log(10.0)
    grid = np.linspace(log_min, math.log(float(ref.max())), knots)
    band_gen = np.searchsorted(inner, np.log(vis_gen))
    band_ref = np.searchsorted(inner, np.log(vis_ref))
    region = region_index(gen.shape[1:], rings, depths)
    table = []
    for b in range(bands):
        n_gen, n_ref = int(np.sum(band_gen == b)), int(np.sum(band_ref == b))
        if n_gen < 10 or n_ref < 10:
            raise ModelError(f"cell map: band {b} holds {n_gen} generated and {n_ref} reference showers (10 needed)")
        g_b = gen[band_gen == b].reshape(n_gen, -1)
        r_b = ref[band_ref == b].reshape(n_ref, -1)
        rows = []
        for r in range((len(rings) + 1) * (len(depths) + 1)):
            g_r, r_r = g_b[:, region == r].ravel(), r_b[:, region == r].ravel()
            row = _matched_row(g_r[g_r > 0], n_gen, r_r[r_r >= threshold], n_ref, grid, log_min, min_cells)
            rows.append(tuple(float(v) for v in row.astype(np.float32)))
        table.append(tuple(rows))  # float32 values, as the card stores them
    return CellMap(float(log_min), float(grid[1] - grid[0]), tuple(float(c) for c in centres),
                   tuple(float(e) for e in rings), tuple(int(e) for e in depths), tuple(table))
