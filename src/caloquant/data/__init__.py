"""Stage 2, data: shower files (3DGAN and CaloChallenge layouts) and streaming datasets."""

from __future__ import annotations

from caloquant.data.dataset import ShowerDataset
from caloquant.data.formats import LAYOUTS, ShowerFile, ShowerSet, ShowerWriter, write_showers
from caloquant.data.shards import Manifest, ShowerFiles, convert, expand_paths, open_showers, read_showers

__all__ = [
    "LAYOUTS",
    "Manifest",
    "ShowerDataset",
    "ShowerFile",
    "ShowerFiles",
    "ShowerSet",
    "ShowerWriter",
    "convert",
    "expand_paths",
    "open_showers",
    "read_showers",
    "write_showers",
]
