"""The INT8 model of the recipe shipped with a generator, built from the recipe once per machine and cached (the
runtime only loads it), and opening a generator at any precision word, int8 included."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from caloquant._atomic import sha256_file
from caloquant.errors import ModelError
from caloquant.export.cache import cached, int8_entry
from caloquant.export.files import save_ir
from caloquant.export.onnx import generator_meta
from caloquant.models.registry import LoadedGenerator, load_generator
from caloquant.quantize.recipe import apply_recipe, read_recipe
from caloquant.quantize.source import ResolvedModel
from caloquant.runtime.generator import Generator, open_generator


def shipped_int8(model: LoadedGenerator | ResolvedModel) -> Path:
    """The INT8 IR of the recipe shipped next to the generator's weights, built on first use and cached."""
    gen = model.generator if isinstance(model, ResolvedModel) else model
    if gen is None:
        raise ModelError(f"{model.source}: not a caloquant generator, so no recipe is shipped with it")
    recipe, entry = int8_entry(gen)

    def build(folder: Path) -> None:
        r = read_recipe(recipe)
        meta = generator_meta(gen, precision="int8-mixed", recipe=str(recipe), recipe_sha256=sha256_file(recipe),
                              tuned_on=None if r.machine is None else dict(r.machine))
        save_ir(apply_recipe(model, r), folder / "model.xml", meta)

    return cached(entry, build) / "model.xml"


def open_deployed(model: str | os.PathLike[str] | LoadedGenerator, *, precision: str | os.PathLike[str] = "fp32",
                  **options: Any) -> Generator:
    """``caloquant.runtime.open_generator`` for every precision word: int8 first builds the shipped recipe's INT8
    IR (once, cached)."""
    gen = model if isinstance(model, LoadedGenerator) else load_generator(model)
    if str(precision) == "int8":
        shipped_int8(gen)
    return open_generator(gen, precision=precision, **options)
