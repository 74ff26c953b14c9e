"""A dataset that streams showers from many HDF5 files without loading them whole."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from caloquant.data.formats import ShowerFile, ShowerSet
from caloquant.data.shards import expand_paths
from caloquant.errors import GeometryMismatchError, InputError
from caloquant.geometry import Window


class ShowerDataset:
    """Showers of many files seen as one sequence of (file, row) blocks, read lazily chunk by chunk.

    ``iter_chunks`` can shard the blocks over ranks (disjoint, for data-parallel training) and shuffle the
    block order per epoch from a seed; rows inside a block stay contiguous so reads remain sequential.
    """

    def __init__(self, sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> None:
        self.paths = expand_paths(sources)
        seen: dict[Path, Path] = {}
        for p in self.paths:
            if Path(p).resolve() in seen:  # its showers would count twice
                raise InputError(f"{p} is given twice (also as {seen[Path(p).resolve()]})")
            seen[Path(p).resolve()] = Path(p)
        self.lengths: list[int] = []
        window: Window | None = None
        for p in self.paths:
            with ShowerFile(p, check_values=False) as f:
                if window is not None and f.window != window:
                    raise GeometryMismatchError(f"{p}: window {f.window} differs from {self.paths[0]} ({window})")
                window = f.window
                self.lengths.append(len(f))
        assert window is not None
        self.window = window

    def __len__(self) -> int:
        return int(sum(self.lengths))

    def blocks(self, chunk_size: int) -> list[tuple[int, int, int]]:
        """(file index, start, stop) for every chunk of every file."""
        return [
            (i, s, min(s + chunk_size, n)) for i, n in enumerate(self.lengths) for s in range(0, n, chunk_size)
        ]

    def iter_chunks(
        self,
        chunk_size: int = 1000,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle_seed: int | None = None,
    ) -> Iterator[ShowerSet]:
        """Yield ShowerSets of at most ``chunk_size`` rows; rank r of w gets blocks r, r+w, r+2w, ..."""
        blocks = self.blocks(chunk_size)
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(blocks))
            blocks = [blocks[k] for k in order]
        mine = blocks[rank::world_size]
        handles: dict[int, ShowerFile] = {}
        try:
            for i, start, stop in mine:
                if i not in handles:
                    handles[i] = ShowerFile(self.paths[i])
                yield handles[i].read(start, stop)
        finally:
            for h in handles.values():
                h.close()

    def read_all(self, limit: int | None = None) -> ShowerSet:
        """Concatenate the first ``limit`` showers (all when None) into memory."""
        parts, total = [], 0
        for chunk in self.iter_chunks(10_000):
            if limit is not None and total + len(chunk) > limit:
                chunk = chunk[: limit - total]
            parts.append(chunk)
            total += len(chunk)
            if limit is not None and total >= limit:
                break
        return ShowerSet.concatenate(parts)
