"""Stage 3, train: adversarial training of the 3DGAN models, single process or torchrun data-parallel."""

from caloquant.train.config import TrainConfig
from caloquant.train.loop import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train"]
