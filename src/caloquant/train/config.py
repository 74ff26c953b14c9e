"""Training configuration: defaults follow the Keras 3DGAN reference (gan3d.md section 2) unless noted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from caloquant.errors import InputError
from caloquant.models.registry import CRITICS

OPTIMIZERS = ("rmsprop", "adam", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")
RESIDENT = ("auto", "on", "off")
REFERENCE_LOSS_WEIGHTS = {"ecal25": (2.0, 0.1, 0.1), "angle51": (3.0, 0.1, 25.0, 0.1)}


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in every checkpoint so that a resume uses the same settings."""

    arch: str = "ecal25"
    batch_size: int = 128  # per rank; the global batch is batch_size * world_size
    lr: float = 1e-3  # RMSprop, per the reference
    optimizer: str = "rmsprop"  # rmsprop (reference), adam (Rehm's TF2 runs) or sgd
    scale_lr: bool = True  # lr * global batch / reference batch, reached linearly over warmup_steps
    reference_batch: int = 0  # the global batch at which lr applies; 0: batch_size (lr scales with world size)
    warmup_steps: int = 200
    label_flip: float = 0.05
    gen_steps: int = 2
    loss_weights: tuple[float, ...] = ()  # empty: reference weights for the architecture
    physics_weight: float = 1.0  # caloquant addition (0 = the reference recipe): batch moment matching
    physics_groups: int = 4  # energy-sorted groups in which moments are matched
    pretrain_steps: int = 0  # generator-only steps on the physics and ECAL-sum terms before the adversarial game
    dropout: float = 0.2
    ecal_cut: float = 10.0  # keep showers whose scaled ECAL sum (xscale * GeV) exceeds this
    xscale: float = 100.0
    xpower: float = 0.85
    epochs: int = 60
    max_steps: int = 0  # 0: no limit besides epochs
    max_minutes: float = 0.0  # 0: no limit; otherwise stop (with a checkpoint) after this much training in all runs
    run_minutes: float = 0.0  # 0: no limit; otherwise this run (this process) stops, with a checkpoint, after it
    checkpoint_every: int = 100
    eval_every: int = 0  # steps between physics evaluations; 0: once per epoch
    eval_showers: int = 2000
    holdout_fraction: float = 0.1
    chunk_size: int = 1000  # rows per read block
    mix_blocks: int = 4  # blocks shuffled together
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: leave torch's default
    channels_last: bool = True
    precision: str = "auto"  # fp32, bf16 (autocast), auto: bf16 on CUDA and on CPUs with native BF16
    resident: str = "auto"  # hold the pre-processed training rows on the device: on, off, auto (when they fit)
    compile: bool = False  # torch.compile the generator and discriminator
    log_every: int = 10  # steps between loss read-backs (the only host syncs of the step loop)
    ema_decay: float = 0.0  # exponential moving average of the generator (0: off); evaluated and exported
    select: str = "moments"  # held-out metric that picks the best checkpoint: moments or fpd
    init_generator: str = ""  # start the generator from these weights (shipped name or .pt); D starts fresh
    critic: str = "reference"  # reference: the 3DGAN discriminator; light: LightCritic with the fast schedule
    dist_weight: float = 0.0  # energy-conditioned sliced-Wasserstein term on physics features (0: off)
    dist_projections: int = 32  # random projections of that term (besides one per feature)
    r1: float = 0.0  # R1 penalty weight on the critic's real-shower gradients (0: off)
    dead_cell_grad: float = 0.0  # training-only slope of the output ReLU's backward pass below 0 (0: plain ReLU)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in REFERENCE_LOSS_WEIGHTS:
            raise InputError(f"unknown architecture {self.arch!r} (ecal25 or angle51)")
        if not self.loss_weights:
            self.loss_weights = REFERENCE_LOSS_WEIGHTS[self.arch]
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        if len(self.loss_weights) != len(REFERENCE_LOSS_WEIGHTS[self.arch]):
            raise InputError(f"{self.arch} needs {len(REFERENCE_LOSS_WEIGHTS[self.arch])} loss weights, "
                             f"got {len(self.loss_weights)}")
        for name in ("batch_size", "gen_steps", "epochs", "chunk_size", "mix_blocks", "physics_groups"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.label_flip < 0.5:
            raise InputError(f"label_flip must be in [0, 0.5), got {self.label_flip}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.resident not in RESIDENT:
            raise InputError(f"resident must be one of {', '.join(RESIDENT)}, got {self.resident!r}")
        if self.select not in ("moments", "fpd"):
            raise InputError(f"select must be moments or fpd, got {self.select!r}")
        if self.log_every <= 0 or self.reference_batch < 0:
            raise InputError("log_every must be positive and reference_batch non-negative")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.critic not in CRITICS:
            raise InputError(f"critic must be one of {', '.join(CRITICS)}, got {self.critic!r}")
        if not 0.0 <= self.dead_cell_grad <= 1.0:
            raise InputError(f"dead_cell_grad must be in [0, 1], got {self.dead_cell_grad}")
        for name in ("dist_weight", "r1", "physics_weight"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise InputError(f"{name} must be a finite non-negative number, got {value}")
        if self.dist_projections < 0:
            raise InputError(f"dist_projections must be non-negative, got {self.dist_projections}")
        if self.lr <= 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss_weights"] = list(self.loss_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if k == "loss_weights" else v) for k, v in d.items() if k in names}
        return cls(**kw)
