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
import torch

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

    def groups(self, epoch: int) -> Iterator[tuple[list[int], int]]:
        """This rank's groups of block indices for ``epoch``, each with its group number (the shuffle seed)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))
        mine = [int(k) for k in order[self.rank :: self.world_size]]
        for g in range(0, len(mine), self.mix_blocks):
            yield mine[g : g + self.mix_blocks], g

    def batch_rows(self, epoch: int, group: int, n_rows: int) -> Iterator[np.ndarray]:
        """Row indices (into the group's kept rows) of each full batch of one group."""
        perm = np.random.default_rng([self.seed, epoch, self.rank, group]).permutation(n_rows)
        for s in range(0, n_rows - self.batch_size + 1, self.batch_size):
            yield perm[s : s + self.batch_size]

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` for this rank, skipping the first ``skip`` (for exact resume)."""
        emitted = 0
        for members, g in self.groups(epoch):
            batch = preprocess(read_blocks(self.dataset, [self.blocks[k] for k in members]), self.spec,
                               self.ecal_cut)
            for idx in self.batch_rows(epoch, g, len(batch.energy)):
                if emitted >= skip:
                    yield Batch(batch.images[idx], batch.energy[idx], batch.theta[idx], batch.ecal[idx])
                emitted += 1


@dataclass
class TensorBatch:
    """A training batch as tensors on the training device."""

    images: torch.Tensor
    energy: torch.Tensor
    theta: torch.Tensor
    ecal: torch.Tensor

    def __len__(self) -> int:
        return int(self.energy.shape[0])


def host_to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """``a`` as a tensor on ``device``; to CUDA through pinned memory and an asynchronous copy, so that the
    host does not wait for the device's queue to drain (a plain ``.to("cuda")`` synchronises)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def to_tensors(batch: Batch | TensorBatch, device: torch.device) -> TensorBatch:
    """Move a numpy batch to ``device``; tensor batches pass through."""
    if isinstance(batch, TensorBatch):
        return batch
    return TensorBatch(*(host_to_device(getattr(batch, f), device) for f in ("images", "energy", "theta", "ecal")))


def resident_bytes(stream: BatchStream, dtype: torch.dtype = torch.float32) -> int:
    """Memory the stream's training rows would take when held resident (upper bound: before the ECAL cut)."""
    rows = sum(stop - start for _, start, stop in stream.blocks)
    item = torch.empty((), dtype=dtype).element_size()
    return rows * (stream.spec.window.n_cells + 3) * item


class ResidentStream:
    """The same batches as ``BatchStream``, from the pre-processed training rows held once on the device.

    Rows are read and pre-processed once (every training block: a rank's share changes from epoch to epoch),
    stored block by block in one tensor,
    and each batch is gathered on the device: no file reads, no host-to-device copies after the start.
    ``epoch`` yields, batch for batch, what ``BatchStream.epoch`` yields (tested), so resume stays exact.
    """

    def __init__(self, stream: BatchStream, device: torch.device) -> None:
        self.stream, self.device = stream, device
        mine = range(len(stream.blocks))  # a rank's share of the blocks changes every epoch: hold them all
        self.offsets: dict[int, tuple[int, int]] = {}
        parts: list[Batch] = []
        total = 0
        for k in mine:
            b = preprocess(read_blocks(stream.dataset, [stream.blocks[k]]), stream.spec, stream.ecal_cut)
            self.offsets[k] = (total, len(b.energy))
            total += len(b.energy)
            parts.append(b)
        cat = Batch(*(np.concatenate([getattr(b, f) for b in parts]) for f in ("images", "energy", "theta", "ecal")))
        self.data = to_tensors(cat, device)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[TensorBatch]:
        """Batches of ``epoch`` for this rank as device tensors, skipping the first ``skip``."""
        emitted = 0
        d, size = self.data, self.stream.batch_size
        for members, g in self.stream.groups(epoch):
            rows = np.concatenate([np.arange(o, o + n) for o, n in (self.offsets[k] for k in members)])
            batches = [rows[idx] for idx in self.stream.batch_rows(epoch, g, len(rows))]
            todo = batches[max(0, skip - emitted):]
            emitted += len(batches) - len(todo)
            if not todo:
                continue
            order = host_to_device(np.concatenate(todo), self.device)  # one copy per group, not per batch
            for s in range(len(todo)):
                sel = order[s * size : (s + 1) * size]
                yield TensorBatch(d.images[sel], d.energy[sel], d.theta[sel], d.ecal[sel])
                emitted += 1
