"""The 3DGAN generators and discriminators, their specs and the shipped pretrained weights.

Specs and the registry need numpy only; the PyTorch modules (``caloquant.models.gan3d``) load on first use.
"""

from __future__ import annotations

from typing import Any

from caloquant._optional import require
from caloquant.models.cellmap import CellMap, fit_cell_map
from caloquant.models.registry import (
    LoadedGenerator,
    available_models,
    build_discriminator,
    build_generator,
    calibrate_batchnorm,
    load_generator,
    model_card,
    sample_showers,
    sha256_file,
    shipped_recipe,
)
from caloquant.models.spec import DEFAULT_SPECS, ModelSpec, shower_noise

#: Names of ``caloquant.models.gan3d`` (PyTorch), imported when first asked for.
_TORCH_NAMES = ("AngleDiscriminator", "AngleGenerator", "EcalEnergyDiscriminator", "EcalEnergyGenerator",
                "count_parameters")

__all__ = [
    "DEFAULT_SPECS",
    "AngleDiscriminator",
    "AngleGenerator",
    "CellMap",
    "EcalEnergyDiscriminator",
    "EcalEnergyGenerator",
    "LoadedGenerator",
    "ModelSpec",
    "available_models",
    "build_discriminator",
    "build_generator",
    "calibrate_batchnorm",
    "count_parameters",
    "fit_cell_map",
    "load_generator",
    "model_card",
    "sample_showers",
    "sha256_file",
    "shipped_recipe",
    "shower_noise",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(require("caloquant.models.gan3d"), name)
    raise AttributeError(f"module 'caloquant.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
