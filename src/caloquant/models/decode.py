"""Decoding a generator's output into cell energies, fused: power, entry-point shift, cell map and readout cut.

``ModelSpec.to_physical`` turns raw output ((xscale * E) ** xpower) into GeV, moves each shower by its entry-point
offsets (``models.entry``) and passes it through the cell map (``models.cellmap``) and the readout threshold. Written
as NumPy array passes, it took with the file writing a third of ``caloquant generate``'s time on a 2-core Xeon
(2026-12-06): each pass streams the whole batch (16 MB for 256 ecal25 showers) through memory and makes
temporaries. This kernel does all stages for one shower at a time in cache, computes powers and logarithms for lit
cells only, and releases the GIL, so that decoding can overlap inference. The reference of the shift is
``models.entry.shift_cells`` (NumPy and torch, for training); tests hold this kernel to it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Visible energies below this (GeV) count as this when the cell map picks a visible-energy band.
_VISIBLE_FLOOR = 1e-30


@njit(cache=True, nogil=True)
def _shift_axis(src: np.ndarray, dst: np.ndarray, offset: float, axis: int) -> None:  # pragma: no cover (numba)
    """dst = src moved by ``offset`` cells in (-1, 1) along ``axis`` (0: x, 1: y) of one shower (X, Y, Z), each
    cell's energy shared linearly with its neighbour; energy moved past the window's edge is lost."""
    nx, ny, nz = src.shape
    up = np.float32((abs(offset) + offset) / 2)
    down = np.float32((abs(offset) - offset) / 2)
    keep = np.float32(1) - up - down
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                v = keep * src[x, y, z]
                if axis == 0:
                    if x > 0:
                        v += up * src[x - 1, y, z]
                    if x < nx - 1:
                        v += down * src[x + 1, y, z]
                else:
                    if y > 0:
                        v += up * src[x, y - 1, z]
                    if y < ny - 1:
                        v += down * src[x, y + 1, z]
                dst[x, y, z] = v


@njit(cache=True, nogil=True)
def _map_value(table: np.ndarray, band: int, region: int, k: int, f: float, log_step: float
               ) -> float:  # pragma: no cover (numba)
    """ln g at grid position k + f of one band's map in one region (beyond the last knot: slope 1)."""
    at_k = table[band, region, k]
    nxt = table[band, region, k + 1]
    if f > 1.0:
        return nxt + (f - 1.0) * log_step
    return at_k + f * (nxt - at_k)


@njit(cache=True, nogil=True)
def _decode_kernel(raw: np.ndarray, inv_power: np.float32, scale: np.float32, dx: np.ndarray, dy: np.ndarray,
                   threshold: float, table: np.ndarray, log_min: float, log_step: float, centres: np.ndarray,
                   region: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover (numba)
    n, nx, ny, nz = raw.shape
    a = np.empty((nx, ny, nz), dtype=np.float32)
    b = np.empty((nx, ny, nz), dtype=np.float32)
    thr32 = np.float32(threshold)
    nb = table.shape[0]
    k_max = table.shape[2] - 1
    n_cells = nx * ny * nz
    lit_idx = np.empty(n_cells, dtype=np.int64)
    lit_y = np.empty(n_cells, dtype=np.float64)
    for i in range(n):
        for x in range(nx):  # power (lit cells only; NaN stays NaN, for the precision guard)
            for y in range(ny):
                for z in range(nz):
                    r = raw[i, x, y, z]
                    a[x, y, z] = r ** inv_power / scale if r > 0 or r != r else np.float32(0)
        cells = a
        if dx[i] != 0 or dy[i] != 0:
            _shift_axis(a, b, dx[i], 0)
            _shift_axis(b, a, dy[i], 1)
        flat = cells.ravel()
        o = out[i].ravel()
        if table.shape[1] == 0:  # no cell map: the readout cut only
            for c in range(n_cells):
                v = flat[c]
                o[c] = np.float32(0) if v < thr32 else v  # NaN stays
            continue
        visible = 0.0
        for c in range(n_cells):
            if flat[c] >= thr32:
                visible += flat[c]
        # visible-energy band: linear interpolation of ln(visible) between band centres, clamped at the ends
        lv = math.log(max(visible, _VISIBLE_FLOOR))
        pos = 0.0
        if nb > 1:
            if lv >= centres[nb - 1]:
                pos = nb - 1.0
            elif lv > centres[0]:
                j = 0
                while centres[j + 1] <= lv:
                    j += 1
                pos = j + (lv - centres[j]) / (centres[j + 1] - centres[j])
        lo = min(int(math.floor(pos)), max(nb - 2, 0))
        w = pos - lo
        n_lit = 0
        mapped = 0.0
        for c in range(n_cells):
            o[c] = 0.0
            v = flat[c]
            if not math.isfinite(v):  # a broken engine's NaN or inf stays visible
                o[c] = v
                continue
            if v <= 0:
                continue
            u = (math.log(v) - log_min) / log_step
            if u < 0:  # below the grid: reads 0
                continue
            k = min(int(u), k_max - 1)
            f = u - k
            g = _map_value(table, lo, region[c], k, f, log_step)
            if nb > 1:
                g = (1.0 - w) * g + w * _map_value(table, lo + 1, region[c], k, f, log_step)
            e = math.exp(g)
            if e >= threshold:
                lit_idx[n_lit] = c
                lit_y[n_lit] = e
                n_lit += 1
                mapped += e
        for _ in range(2):  # restore the visible energy; the second pass scales up what the first one's cut removed
            ratio = visible / mapped if mapped > 0 else 1.0
            mapped = 0.0
            for j in range(n_lit):
                e = lit_y[j] * ratio
                if e < threshold:
                    e = 0.0
                lit_y[j] = e
                mapped += e
        for j in range(n_lit):
            o[lit_idx[j]] = lit_y[j]


def decode(raw: np.ndarray, *, xpower: float = 1.0, xscale: float = 1.0, dx: np.ndarray | None = None,
           dy: np.ndarray | None = None, threshold: float = 0.0, table: np.ndarray | None = None,
           log_min: float = 0.0, log_step: float = 1.0, centres: np.ndarray | None = None,
           region: np.ndarray | None = None) -> np.ndarray:
    """Cells in GeV (N, X, Y, Z, float32) of raw output ``raw`` (N, X, Y, Z): max(raw, 0) ** (1 / xpower) / xscale,
    moved by ``dx``, ``dy`` cells along x and y (None: not moved), then through the cell map given by ``table``
    (bands, regions, knots; ln g on the grid ``log_min`` + k ``log_step``), band ``centres`` and the per-cell
    ``region`` (None: no map), cells below ``threshold`` (GeV) set to 0. Equal to the NumPy stages it fuses
    within float32 rounding."""
    x = np.ascontiguousarray(raw, dtype=np.float32)
    n = len(x)
    zeros = np.zeros(n, dtype=np.float32)
    sx = zeros if dx is None else np.ascontiguousarray(dx, dtype=np.float32)
    sy = zeros if dy is None else np.ascontiguousarray(dy, dtype=np.float32)
    if table is None:
        tab = np.zeros((1, 0, 2), dtype=np.float64)
        cen, reg = np.zeros(1, dtype=np.float64), np.zeros(1, dtype=np.int64)
    else:
        assert centres is not None and region is not None
        tab = np.ascontiguousarray(table, dtype=np.float64)
        cen = np.ascontiguousarray(centres, dtype=np.float64)
        reg = np.ascontiguousarray(region, dtype=np.int64)
    out = np.empty_like(x)
    _decode_kernel(x, np.float32(1.0 / xpower), np.float32(xscale), sx, sy, float(threshold), tab,
                   float(log_min), float(log_step), cen, reg, out)
    return out
