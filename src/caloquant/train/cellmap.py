"""After training: fit a generator's cell map (``models.cellmap``) against MC showers and write the generator with it.

The map is fitted on showers the generator makes at energies drawn from the MC sample's, decoded without a readout
threshold, so that faint cells the generator leaves below it can rise above it. Use MC showers independent of any
sample the mapped generator is later judged against (the training file serves; the comparison sample never).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from caloquant._atomic import atomic_path, sha256_file, write_text_atomic
from caloquant._optional import require
from caloquant.data import ShowerSet
from caloquant.errors import GeometryMismatchError, InputError
from caloquant.models.card import TUNING_FIELD
from caloquant.models.cellmap import BANDS, fit_cell_map
from caloquant.models.registry import LoadedGenerator, sample_showers
from caloquant.models.spec import ModelSpec


@dataclass(frozen=True)
class MapFit:
    """A fitted map in its spec, with the read-out cells per shower of the fitting sample before and after."""

    spec: ModelSpec
    showers: int
    cells_generated: float
    cells_mapped: float
    cells_reference: float


def fit_generator_map(gen: LoadedGenerator, reference: ShowerSet, *, threshold: float | None = None,
                      n: int = 4000, seed: int = 77, bands: int = BANDS, batch: int = 500) -> MapFit:
    """Fit ``gen``'s cell map against MC showers ``reference`` (read out through ``threshold``, default the spec's)
    with ``n`` generated showers at energies and angles drawn from the reference's; the spec of the result decodes
    through the map and the threshold."""
    thr = gen.spec.cell_threshold_gev if threshold is None else float(threshold)
    if thr <= 0:
        raise InputError("the cell map needs the MC's readout threshold: the model has none, give one "
                         "(--readout-threshold GEV)")
    if reference.ecal.shape[1:] != gen.spec.window.shape:
        raise GeometryMismatchError(f"MC showers of {reference.ecal.shape[1:]} cells do not fit the {gen.spec.arch} "
                                    f"window {gen.spec.window.shape}")
    if n < 20 * bands:
        raise InputError(f"--n {n} generated showers are too few for {bands} bands (20 per band at least)")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(reference), n)
    plain = replace(gen.spec, cell_threshold_gev=0.0, cell_map=None)
    cells = sample_showers(gen.module, plain, reference.energy[pick], np.degrees(reference.theta[pick]), seed=seed,
                           batch=batch)
    ref = reference.ecal.astype(np.float32, copy=True)
    ref[ref < thr] = 0.0
    cmap = fit_cell_map(cells, ref, thr, bands=bands)
    spec = replace(gen.spec, cell_threshold_gev=thr, cell_map=cmap)

    def per_shower(x: np.ndarray) -> float:
        return float((x >= thr).sum() / len(x))

    return MapFit(spec, n, per_shower(cells), per_shower(cmap.apply(cells, thr)), per_shower(ref))


def write_mapped_generator(gen: LoadedGenerator, fit: MapFit, out: Path, *, fitted_on: str) -> Path:
    """Write ``gen``'s weights as ``out`` (.pt) with the card ``out.json`` whose spec holds the fitted map; every
    caloquant command then loads ``out`` like a shipped model. Both files are complete or absent."""
    torch = require("torch")
    if out.suffix != ".pt":
        raise InputError(f"{out}: the mapped generator is written as a .pt file (its card goes next to it)")
    with atomic_path(out) as tmp:
        torch.save(gen.module.state_dict(), tmp)
    card = {"spec": fit.spec.to_dict(), "sha256": sha256_file(out), TUNING_FIELD: gen.tuning,
            "cell_map_fit": {"source": gen.source, "source_sha256": gen.sha256, "mc": fitted_on,
                             "generated_showers": fit.showers, "cells_per_shower": {
                                 "generated": round(fit.cells_generated, 1), "mapped": round(fit.cells_mapped, 1),
                                 "mc": round(fit.cells_reference, 1)}}}
    write_text_atomic(out.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return out
