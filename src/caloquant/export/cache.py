"""The model cache: exported and INT8 models of each set of weights, each entry checked against its sha256 manifest
on every use, so that one set of weights is exported once per machine and caloquant version."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from caloquant import __version__
from caloquant._atomic import sha256_file
from caloquant._optional import require
from caloquant.errors import ModelError
from caloquant.export import onnx
from caloquant.machine import cpu_has_native_bf16
from caloquant.models.registry import LoadedGenerator, shipped_recipe
from caloquant.models.spec import shower_noise
from caloquant.ui import warn

#: File in every cache entry listing the sha256 of its other files.
MANIFEST = "sha256.json"
#: What the cached graphs are, in every entry's name: "centred" since exports stop before the entry-point shift
#: (decoding shifts); entries of the older graphs, shift inside, are never reused.
GRAPH = "centred"


def cache_dir() -> Path:
    """Where exported and INT8 models are cached: $CALOQUANT_CACHE_DIR, else ~/.cache/caloquant."""
    env = os.environ.get("CALOQUANT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "caloquant"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != MANIFEST}


def is_complete(entry: Path) -> bool:
    """Whether the cache folder ``entry`` exists and matches its sha256 manifest."""
    try:
        return entry.exists() and json.loads((entry / MANIFEST).read_text()) == _digests(entry)
    except (OSError, ValueError):
        return False


def cached(entry: Path, build: Callable[[Path], object]) -> Path:
    """The cache folder ``entry``, verified against its sha256 manifest; built by ``build(folder)`` when missing,
    and rebuilt (with a one-line warning) when incomplete, truncated or modified."""
    if is_complete(entry):
        return entry
    if entry.exists():
        warn(f"cache entry {entry} is incomplete or was modified; rebuilding it")
        shutil.rmtree(entry, ignore_errors=True)
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")  # complete folders only, then rename
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_digests(tmp), indent=2))
        tmp.replace(entry)
    except OSError:
        if not entry.exists():  # not another process caching it first: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def exported(gen: LoadedGenerator, suffix: str, padded: Sequence[str] = ()) -> Path:
    """The generator exported to ONNX (``.onnx``) or IR (``.xml``, converted from the cached ONNX), cached under
    its sha256 and the caloquant version; ``padded``: convolutions exported on zero-padded input channels."""
    variant = f"-pad-{'+'.join(padded)}" if padded else ""
    entry = cache_dir() / "export" / f"{gen.sha256}-{gen.spec.digest()}-{__version__}-{GRAPH}-{suffix[1:]}{variant}"
    if suffix == ".onnx":
        return cached(entry, lambda d: onnx.export_onnx(gen, d / "model.onnx", padded)) / "model.onnx"
    return cached(entry, lambda d: onnx.onnx_to_openvino(exported(gen, ".onnx", padded), gen,
                                                         d / "model.xml")) / "model.xml"


def bf16_padding(gen: LoadedGenerator) -> list[str]:
    """The generator's convolutions (module names) that this CPU's oneDNN computes wrong in BF16 (checked in
    PyTorch, whose kernels OpenVINO's CPU plugin shares); none where BF16 is emulated. The runtime's BF16 passes
    them as ``padded`` to ``exported`` (the same function, every layer's name kept); the tuner keeps them out of
    its BF16 fallback (``quantize.source.ResolvedModel.bf16_wrong``).

    On an Intel Xeon with AMX (2026-12-05) the ecal25 generator's first convolution came out 104 % off in OpenVINO
    BF16; exported padded it is 0.4 % off and BF16 runs 3.9x OpenVINO FP32 (docs/benchmarks.md)."""
    if not cpu_has_native_bf16():
        return []
    torch, bf16 = require("torch"), require("caloquant.models.bf16")
    energies = np.geomspace(*gen.spec.energy_range, 4)  # shapes are what the check needs, not these values
    noise = shower_noise(0, np.arange(len(energies)), gen.spec.noise_size)
    repaired, _ = bf16.repair_bf16_convs(copy.deepcopy(gen.module),
                                         torch.from_numpy(gen.spec.latent(energies, None, noise)))
    return repaired


def int8_entry(gen: LoadedGenerator) -> tuple[Path, Path]:
    """The recipe shipped with ``gen``'s weights and the cache folder of the INT8 IR built from it (ModelError when
    no recipe is shipped)."""
    recipe = shipped_recipe(gen)
    if recipe is None:
        raise ModelError(f"no INT8 model for {gen.source}: {Path(gen.source).with_suffix('.recipe.json').name} is not "
                         f"shipped; run `caloquant quantize --model {gen.source} -o DIR` and pass DIR/model.xml")
    return recipe, cache_dir() / "int8" / f"{gen.sha256[:16]}-{gen.spec.digest()}-{GRAPH}-{sha256_file(recipe)[:16]}"
