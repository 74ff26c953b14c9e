"""Stage 3, train: adversarial training of the 3DGAN models, single process or torchrun data-parallel."""

from caloquant.train.cellmap import MapFit, fit_generator_map, write_mapped_generator
from caloquant.train.config import TrainConfig
from caloquant.train.loop import Trainer, TrainResult, train

__all__ = ["MapFit", "TrainConfig", "TrainResult", "Trainer", "fit_generator_map", "train", "write_mapped_generator"]
