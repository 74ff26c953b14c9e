"""The 3DGAN generators and discriminators, their specs and the shipped pretrained weights."""

from caloquant.models.gan3d import (
    AngleDiscriminator,
    AngleGenerator,
    EcalEnergyDiscriminator,
    EcalEnergyGenerator,
    count_parameters,
)
from caloquant.models.registry import (
    LoadedGenerator,
    available_models,
    build_discriminator,
    build_generator,
    load_generator,
    model_card,
    sample_showers,
    sha256_file,
)
from caloquant.models.spec import DEFAULT_SPECS, ModelSpec, shower_noise

__all__ = [
    "DEFAULT_SPECS",
    "AngleDiscriminator",
    "AngleGenerator",
    "EcalEnergyDiscriminator",
    "EcalEnergyGenerator",
    "LoadedGenerator",
    "ModelSpec",
    "available_models",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "load_generator",
    "model_card",
    "sample_showers",
    "sha256_file",
    "shower_noise",
]
