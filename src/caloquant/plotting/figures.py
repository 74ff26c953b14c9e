"""Validation figures (matplotlib Figure objects on the Agg canvas, mplhep style); no computation beyond binning.

Figures are built without pyplot, so importing this module never changes a notebook's backend.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from caloquant.validate.bins import AngleBins, EnergyBins
from caloquant.validate.features import CELL_EDGES, ShowerFeatures

Named = Sequence[tuple[str, ShowerFeatures]]
#: Features shown as histograms (when present); the middle layer stands for the per-layer families.
HIST_FEATURES = ("sampling_fraction", "mu_x", "mu_z", "sigma2_x", "sigma2_z", "log10_E_layer[{m}]", "ec_x[{m}]",
                 "width_x[{m}]", "ec_r[{m}]", "width_r[{m}]", "sparsity[{m}]", "theta_estimate_deg")


@contextmanager
def hep_style() -> Iterator[None]:
    """mplhep ROOT style for the figures made inside, without touching global settings."""
    # the ROOT style lists font families absent from most machines; matplotlib's fallback is fine, its log is noise
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    with matplotlib.style.context(mplhep.style.ROOT), matplotlib.style.context({"font.size": 11}):
        yield


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of this size (inches) on the Agg canvas, with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ratio_axes(fig: Figure, ncols: int) -> tuple[list, list]:
    grid = fig.add_gridspec(2, ncols, height_ratios=(3, 1))
    top = [fig.add_subplot(grid[0, k]) for k in range(ncols)]
    bottom = [fig.add_subplot(grid[1, k], sharex=top[k]) for k in range(ncols)]
    return top, bottom


def _mean_err(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(values), 1)
    return values.mean(axis=0), values.std(axis=0) / np.sqrt(n)


def profiles(reference: ShowerFeatures, candidates: Named) -> Figure:
    """Mean longitudinal (z) and lateral (x, y) energy profiles with candidate/reference ratio panels."""
    with hep_style():
        fig = new_figure(13, 5)
        top, bottom = _ratio_axes(fig, 3)
        for k, (axis, attr) in enumerate((("x", "profile_x"), ("y", "profile_y"), ("z (layer)", "profile_z"))):
            r, re = _mean_err(getattr(reference, attr))
            i = np.arange(r.size)
            top[k].errorbar(i, r, re, fmt="o", ms=3, color="black", label="reference")
            for name, f in candidates:
                c, ce = _mean_err(getattr(f, attr))
                line = top[k].step(i, c, where="mid", label=name)[0]
                with np.errstate(invalid="ignore", divide="ignore"):
                    bottom[k].errorbar(i, c / r, np.hypot(ce / r, c * re / r**2), fmt=".", color=line.get_color())
            top[k].set_yscale("log")
            top[k].set_ylabel("mean energy per shower (GeV)")
            bottom[k].axhline(1, color="grey", lw=1)
            bottom[k].set_ylim(0.5, 1.5)
            bottom[k].set_xlabel(f"cell index {axis}")
            bottom[k].set_ylabel("cand / ref")
        top[0].legend(fontsize=8)
    return fig


def _binned_means(f: ShowerFeatures, values: np.ndarray, bins: EnergyBins) -> tuple[np.ndarray, np.ndarray]:
    masks = bins.masks(f.energy)[int(bins.include_all):]
    means, errs = [], []
    for m in masks:
        v = values[m]
        means.append(v.mean(axis=0) if len(v) else np.full(values.shape[1:], np.nan))
        errs.append(v.std(axis=0) / np.sqrt(len(v)) if len(v) > 1 else np.full(values.shape[1:], np.nan))
    return np.array(means), np.array(errs)


def moments_vs_energy(reference: ShowerFeatures, candidates: Named, bins: EnergyBins) -> Figure:
    """Event-averaged 3DGAN moments (mu and sigma^2 along x, y, z) per primary-energy bin."""
    names = ["mu_x", "mu_y", "mu_z", "sigma2_x", "sigma2_y", "sigma2_z"]
    x = bins.centres[int(bins.include_all):]
    with hep_style():
        fig = new_figure(13, 7)
        axes = [fig.add_subplot(2, 3, k + 1) for k in range(6)]
        for label, f, style in [("reference", reference, "o"), *[(n, c, "s") for n, c in candidates]]:
            m, e = _binned_means(f, f.moments, bins)
            for k, ax in enumerate(axes):
                ax.errorbar(x, m[:, k], e[:, k], fmt=style, ms=4, label=label)
        for k, ax in enumerate(axes):
            ax.set_xlabel("primary energy (GeV)")
            ax.set_ylabel(f"<{names[k]}> (cells)")
        axes[0].legend(fontsize=8)
    return fig


def _points_with_panel(x: np.ndarray, reference: tuple[np.ndarray, np.ndarray],
                       candidates: Sequence[tuple[str, np.ndarray, np.ndarray]], ylabel: str, xlabel: str,
                       difference: bool) -> Figure:
    """Reference and candidate points (value, error) against ``x``, with a lower panel of candidate / reference
    (``difference``: candidate - reference)."""
    r, re = reference
    with hep_style():
        fig = new_figure(7, 6)
        top, bottom = _ratio_axes(fig, 1)
        if difference:
            top[0].plot(x, x, color="grey", lw=1, ls="--", label="y = x")
        top[0].errorbar(x, r, re, fmt="o", color="black", label="reference")
        for name, c, ce in candidates:
            line = top[0].errorbar(x, c, ce, fmt="s", label=name)
            low, low_err = (c - r, np.hypot(ce, re)) if difference else (c / r, ce / r)
            bottom[0].errorbar(x, low, low_err, fmt="s", color=line[0].get_color())
        top[0].set_ylabel(ylabel)
        bottom[0].axhline(0 if difference else 1, color="grey", lw=1)
        bottom[0].set_xlabel(xlabel)
        bottom[0].set_ylabel("cand - ref" if difference else "cand / ref")
        top[0].legend(fontsize=8)
    return fig


def sampling_fraction_vs_energy(reference: ShowerFeatures, candidates: Named, bins: EnergyBins) -> Figure:
    """Mean sampling fraction (visible / primary) per energy bin, with a ratio panel."""
    def means(f: ShowerFeatures) -> tuple[np.ndarray, np.ndarray]:
        m, e = _binned_means(f, f.sampling_fraction[:, None], bins)
        return m[:, 0], e[:, 0]

    return _points_with_panel(bins.centres[int(bins.include_all):], means(reference),
                              [(name, *means(f)) for name, f in candidates], "visible / primary energy",
                              "primary energy (GeV)", difference=False)


def tilt_response(reference: ShowerFeatures, candidates: Named, bins: AngleBins) -> Figure:
    """Mean reconstructed incidence angle against the true angle, per angle bin, with candidate - reference (deg):
    showers that tilt with their angle follow the reference's points, showers that ignore it stay flat."""
    def means(f: ShowerFeatures) -> tuple[np.ndarray, np.ndarray]:
        est = np.degrees(f.theta_estimate)
        out = [_mean_err(est[m]) if m.sum() > 1 else (np.nan, np.nan) for m in bins.masks(f.theta)]
        return np.array([m for m, _ in out], dtype=np.float64), np.array([e for _, e in out], dtype=np.float64)

    return _points_with_panel(np.array([(a + b) / 2 for a, b in bins.intervals]), means(reference),
                              [(name, *means(f)) for name, f in candidates], "mean reconstructed angle (deg)",
                              "incidence angle (deg)", difference=True)


def feature_histograms(reference: ShowerFeatures, candidates: Named,
                       separation: Sequence[dict[str, float]] | None = None) -> Figure:
    """Histograms of selected high-level features (binning from the reference), separation power in the legend."""
    xr, names = reference.high_level()
    mid = reference.window.nz // 3
    wanted = [n.format(m=mid) for n in HIST_FEATURES if n.format(m=mid) in names]
    cand_x = [(n, *f.high_level()) for n, f in candidates]
    with hep_style():
        ncol = 4
        fig = new_figure(16, 3.4 * ((len(wanted) + ncol - 1) // ncol))
        for k, feat in enumerate(wanted):
            ax = fig.add_subplot((len(wanted) + ncol - 1) // ncol, ncol, k + 1)
            j = names.index(feat)
            lo, hi = np.quantile(xr[:, j], (0.001, 0.999))
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
            ax.hist(xr[:, j], edges, density=True, histtype="stepfilled", color="lightgrey", label="reference")
            for c, (name, xc, cnames) in enumerate(cand_x):
                if feat not in cnames:
                    continue
                sep = separation[c].get(feat) if separation else None
                lab = f"{name}" + (f" (S={sep:.3g})" if sep is not None else "")
                ax.hist(xc[:, cnames.index(feat)], edges, density=True, histtype="step", lw=1.5, label=lab)
            ax.set_xlabel(feat)
            ax.legend(fontsize=7)
    return fig


def cell_spectrum(reference: ShowerFeatures, candidates: Named) -> Figure:
    """Distribution of non-empty cell energies (per shower), log-log, with a ratio panel."""
    centres = np.sqrt(CELL_EDGES[:-1] * CELL_EDGES[1:])
    with hep_style():
        fig = new_figure(7, 6)
        top, bottom = _ratio_axes(fig, 1)
        r = reference.cell_hist.sum(axis=0) / len(reference)
        top[0].step(centres, r, where="mid", color="black", label="reference")
        for name, f in candidates:
            c = f.cell_hist.sum(axis=0) / len(f)
            line = top[0].step(centres, c, where="mid", label=name)[0]
            with np.errstate(invalid="ignore", divide="ignore"):
                bottom[0].step(centres, c / r, where="mid", color=line.get_color())
        top[0].set_xscale("log")
        top[0].set_yscale("log")
        top[0].set_ylabel("cells per shower")
        bottom[0].axhline(1, color="grey", lw=1)
        bottom[0].set_ylim(0.5, 1.5)
        bottom[0].set_xlabel("cell energy (GeV)")
        bottom[0].set_ylabel("cand / ref")
        top[0].legend(fontsize=8)
    return fig


def average_images(reference: ShowerFeatures, candidates: Named) -> Figure:
    """Average shower image of each sample projected on the x-y, x-z and y-z planes (log colour scale)."""
    samples = [("reference", reference), *candidates]
    samples = [(n, f) for n, f in samples if f.image_sum is not None]
    with hep_style():
        fig = new_figure(12, 3.6 * len(samples))
        for row, (name, f) in enumerate(samples):
            img = f.image_sum / len(f)
            for col, (axes, labels) in enumerate((((2,), "xy"), ((1,), "xz"), ((0,), "yz"))):
                ax = fig.add_subplot(len(samples), 3, 3 * row + col + 1)
                proj = img.sum(axis=axes)
                pos = proj[proj > 0]
                norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-6), vmax=pos.max()) if pos.size else None
                mesh = ax.imshow(proj.T, origin="lower", aspect="auto", norm=norm, cmap="viridis")
                fig.colorbar(mesh, ax=ax, label="GeV")
                ax.set_xlabel(labels[0])
                ax.set_ylabel(labels[1])
                ax.set_title(f"{name}: {labels}", fontsize=9)
    return fig


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
