"""Deterministic, sharded, resumable training batches streamed from many HDF5 files.

Epoch e shuffles the (file, row-range) blocks with seed (seed, e); rank r of w takes blocks r, r+w, ...
(disjoint shards); ``mix_blocks`` blocks at a time are read, cut, shuffled by row and cut into batches
(the remainder of each group is dropped). The stream is a pure function of (seed, epoch, rank), so a
resumed run re-reads and skips the batches it has already trained on and continues identically.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from caloquant.data.dataset import ShowerDataset
from caloquant.data.formats import ShowerFile, ShowerSet
from caloquant.errors import DataFormatError, GeometryMismatchError
from caloquant.models.spec import ModelSpec


@dataclass
class Batch:
    """One training batch in the GAN's representation (numpy, float32)."""

    images: np.ndarray  # (B, X, Y, Z): (xscale * E_cell) ** xpower
    energy: np.ndarray  # (B,) E / 100
    theta: np.ndarray  # (B,) radians
    ecal: np.ndarray  # (B,) xscale * visible energy, before the power transform


def preprocess(showers: ShowerSet, spec: ModelSpec, ecal_cut: float) -> Batch:
    """Scale, cut on the ECAL sum, power-transform (gan3d.md 2B pre-processing)."""
    scaled = showers.ecal * np.float32(spec.xscale)
    ecal = scaled.reshape(len(showers), -1).sum(1, dtype=np.float64)
    keep = ecal > ecal_cut
    return Batch(
        images=np.power(scaled[keep], np.float32(spec.xpower)),
        energy=(showers.energy[keep] / 100.0).astype(np.float32),
        theta=showers.theta[keep].astype(np.float32),
        ecal=ecal[keep].astype(np.float32),
    )


def split_blocks(dataset: ShowerDataset, chunk_size: int, holdout_fraction: float
                 ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Training and held-out blocks: the last ``holdout_fraction`` of the blocks (file order) are held out."""
    blocks = dataset.blocks(chunk_size)
    n_hold = int(round(len(blocks) * holdout_fraction)) if holdout_fraction > 0 else 0
    if n_hold >= len(blocks):
        raise DataFormatError(f"only {len(blocks)} data blocks: too few to hold out {holdout_fraction:.0%} "
                              "(pass a separate --val file or lower --chunk)")
    return (blocks[: len(blocks) - n_hold], blocks[len(blocks) - n_hold :]) if n_hold else (blocks, [])


def read_blocks(dataset: ShowerDataset, blocks: list[tuple[int, int, int]], limit: int | None = None) -> ShowerSet:
    """Read the given blocks (at most ``limit`` rows) into memory."""
    parts, total = [], 0
    for i, start, stop in blocks:
        with ShowerFile(dataset.paths[i]) as f:
            part = f.read(start, stop)
        parts.append(part)
        total += len(part)
        if limit is not None and total >= limit:
            break
    s = ShowerSet.concatenate(parts)
    return s if limit is None else s[:limit]


class BatchStream:
    """Per-rank batches of one epoch, deterministic in (seed, epoch, rank)."""

    def __init__(self, dataset: ShowerDataset, blocks: list[tuple[int, int, int]], spec: ModelSpec, *,
                 batch_size: int, rank: int, world_size: int, seed: int, mix_blocks: int, ecal_cut: float) -> None:
        if dataset.window != spec.window:
            raise GeometryMismatchError(
                f"training files have window {dataset.window}, the {spec.arch} model needs {spec.window}")
        if len(blocks) < world_size:
            raise DataFormatError(f"{len(blocks)} data blocks cannot feed {world_size} ranks (use a smaller --chunk)")
        self.dataset, self.blocks, self.spec = dataset, blocks, spec
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.mix_blocks, self.ecal_cut = seed, mix_blocks, ecal_cut

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` for this rank, skipping the first ``skip`` (for exact resume)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))
        mine = [self.blocks[k] for k in order[self.rank :: self.world_size]]
        emitted = 0
        for g in range(0, len(mine), self.mix_blocks):
            group = mine[g : g + self.mix_blocks]
            batch = preprocess(read_blocks(self.dataset, group), self.spec, self.ecal_cut)
            perm = np.random.default_rng([self.seed, epoch, self.rank, g]).permutation(len(batch.energy))
            for s in range(0, len(perm) - self.batch_size + 1, self.batch_size):
                if emitted >= skip:
                    idx = perm[s : s + self.batch_size]
                    yield Batch(batch.images[idx], batch.energy[idx], batch.theta[idx], batch.ecal[idx])
                emitted += 1
