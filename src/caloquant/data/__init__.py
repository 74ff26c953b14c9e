"""Stage 2, data: shower files (3DGAN and CaloChallenge layouts) and streaming datasets."""

from __future__ import annotations

from caloquant.data.dataset import ShowerDataset, expand_paths
from caloquant.data.formats import (
    LAYOUTS,
    ShowerFile,
    ShowerSet,
    ShowerWriter,
    convert,
    read_showers,
    write_showers,
)
from caloquant.data.shards import Manifest, ShowerFiles, open_showers

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
