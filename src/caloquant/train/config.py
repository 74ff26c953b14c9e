"""Training configuration: defaults follow the Keras 3DGAN reference (gan3d.md section 2) unless noted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from caloquant.errors import InputError
from caloquant.models.registry import CRITICS
from caloquant.models.spec import MAX_ANGLE_GAIN, MAX_NOISE_ENERGY_GEV
from caloquant.train.losses import DIST_STATISTICS, MEAN_STATISTICS

OPTIMIZERS = ("rmsprop", "adam", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")
RESIDENT = ("auto", "on", "off")
REFERENCE_LOSS_WEIGHTS = {"ecal25": (2.0, 0.1, 0.1), "angle51": (3.0, 0.1, 25.0, 0.1)}

INF = float("inf")
#: Each numeric field's range: (low, high, low excluded, high excluded); the fields of _INTEGERS must be ints.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "batch_size": (1, 65_536, False, False), "gen_steps": (1, 100, False, False), "epochs": (1, 1e9, False, False),
    "chunk_size": (1, 1e9, False, False), "mix_blocks": (1, 1e6, False, False),
    "physics_groups": (1, 1e6, False, False), "log_every": (1, 1e9, False, False),
    "checkpoint_every": (1, 1e12, False, False), "eval_showers": (10, 1e8, False, False),
    "warmup_steps": (0, 1e12, False, False), "pretrain_steps": (0, 1e12, False, False),
    "max_steps": (0, 1e15, False, False), "eval_every": (0, 1e12, False, False),
    "reference_batch": (0, 1e9, False, False), "dist_projections": (0, 10_000, False, False),
    "threads": (0, 4096, False, False), "seed": (0, 2**32 - 1, False, False),
    "lr": (0, 10, True, False), "label_flip": (0, 0.5, False, True), "dropout": (0, 1, False, True),
    "ecal_cut": (0, INF, False, True), "xscale": (0, INF, True, True), "xpower": (0, 10, True, False),
    "max_minutes": (0, INF, False, True), "run_minutes": (0, INF, False, True),
    "holdout_fraction": (0, 1, False, True), "ema_decay": (0, 1, False, True),
    "bn_calibration": (0, 1e8, False, False),
    "physics_weight": (0, INF, False, True), "dist_weight": (0, INF, False, True),
    "sf_weight": (0, INF, False, True), "count_weight": (0, INF, False, True),
    "res_weight": (0, INF, False, True), "centroid_weight": (0, INF, False, True), "r1": (0, INF, False, True),
    "readout_threshold": (0, 1, False, True), "occupancy_weight": (0, INF, False, True),
    "dead_cell_grad": (0, 1, False, False), "profile_weight": (0, INF, False, True),
    "shape_weight": (0, INF, False, True), "depth_weight": (0, INF, False, True),
    "lateral_weight": (0, INF, False, True), "spectrum_weight": (0, INF, False, True),
    "scale_weight": (0, INF, False, True),
    "entry_jitter": (0, 1, False, False), "angle_gain": (0, MAX_ANGLE_GAIN, False, False),
    "noise_energy": (0, MAX_NOISE_ENERGY_GEV, False, False),
}
_INTEGERS = {"batch_size", "gen_steps", "epochs", "chunk_size", "mix_blocks", "physics_groups", "log_every",
             "checkpoint_every", "eval_showers", "warmup_steps", "pretrain_steps", "max_steps", "eval_every",
             "reference_batch", "dist_projections", "threads", "seed", "bn_calibration"}


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
    bn_calibration: int = 1024  # with ema_decay: showers over which the EMA's BatchNorm statistics are recomputed
    select: str = "moments"  # held-out metric that picks the best checkpoint: moments, fpd, goals, goals-mean
    init_generator: str = ""  # start the generator from these weights (shipped name or .pt); D starts fresh
    critic: str = "reference"  # reference: the 3DGAN discriminator; light: LightCritic with the fast schedule
    dist_weight: float = 0.0  # energy-conditioned sliced-distance term on physics features (0: off)
    sf_weight: float = 0.0  # energy-conditioned batch sampling-fraction (mean visible energy) term (0: off)
    count_weight: float = 0.0  # energy-conditioned batch cell-count (occupancy) term (0: off)
    res_weight: float = 0.0  # energy-conditioned batch visible-energy resolution (spread) term (0: off)
    centroid_weight: float = 0.0  # energy-conditioned sliced-distance term on per-layer centroids (0: off)
    occupancy_weight: float = 0.0  # energy-conditioned sliced-distance term on per-layer cell counts (0: off)
    profile_weight: float = 0.0  # energy-conditioned log-ratio term on the mean x, y, z energy profiles (0: off)
    shape_weight: float = 0.0  # distribution term on the per-layer widths and radii of read-out cells (0: off)
    depth_weight: float = 0.0  # distribution term on the layer energies, mean depth and depth spread, read out (0: off)
    lateral_weight: float = 0.0  # distribution term on the shower's x, y barycentres and widths, read out (0: off)
    spectrum_weight: float = 0.0  # energy-conditioned log term on the mean cell spectrum, quarter-decade bins (0: off)
    scale_weight: float = 0.0  # per-shower energy-scale trend in energy and angle, fluctuations left free (0: off)
    readout_threshold: float = 0.0  # GeV: generated cells below it read 0 in training and generation (0: none)
    entry_jitter: float = 0.0  # cells: the generator's output is shifted per shower uniformly within +-this (0: none)
    angle_gain: float = 0.0  # angle51: its first layer sees this x (theta - pi/2) instead of theta (0: theta as is)
    noise_energy: float = 0.0  # angle51: GeV E0, its noise is multiplied by E/E0 (0: noise as drawn, the Keras input)
    dist_projections: int = 32  # random projections of that term (besides one per feature)
    dist_statistic: str = "wasserstein"  # 1-D distance of the distribution terms: wasserstein or energy (unbiased)
    mean_statistic: str = "absolute"  # gradient of the group-mean terms: absolute, or split (leaves the spread)
    r1: float = 0.0  # R1 penalty weight on the critic's real-shower gradients (0: off)
    dead_cell_grad: float = 0.0  # training-only slope of the output ReLU's backward pass below 0 (0: plain ReLU)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in REFERENCE_LOSS_WEIGHTS:
            raise InputError(f"unknown architecture {self.arch!r} (ecal25 or angle51)")
        if not self.loss_weights:
            self.loss_weights = REFERENCE_LOSS_WEIGHTS[self.arch]
        if not isinstance(self.loss_weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < INF for w in self.loss_weights):
            raise InputError(f"loss_weights must be finite non-negative numbers, got {self.loss_weights!r}")
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        if len(self.loss_weights) != len(REFERENCE_LOSS_WEIGHTS[self.arch]):
            raise InputError(f"{self.arch} needs {len(REFERENCE_LOSS_WEIGHTS[self.arch])} loss weights, "
                             f"got {len(self.loss_weights)}")
        self._check_numbers()
        for name in ("angle_gain", "noise_energy"):
            if getattr(self, name) and self.arch != "angle51":
                raise InputError(f"{name} is for a model with an angle input (angle51), not {self.arch}")
        choices = {"precision": PRECISIONS, "resident": RESIDENT,
                   "select": ("moments", "fpd", "goals", "goals-mean"),
                   "optimizer": OPTIMIZERS, "critic": tuple(CRITICS), "dist_statistic": DIST_STATISTICS,
                   "mean_statistic": MEAN_STATISTICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or (
                self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:")):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def _check_numbers(self) -> None:
        """Refuse, naming the field, a number of the wrong type or outside its range (a campaign.json or a
        checkpoint can hold any JSON value, not only what the CLI parses)."""
        for name, (low, high, low_open, high_open) in _RANGES.items():
            value = getattr(self, name)
            integer = name in _INTEGERS
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                raise InputError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
            above = value > low if low_open else value >= low
            below = value < high if high_open else value <= high
            if not (above and below):  # also false for NaN
                interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                raise InputError(f"{name} must be in {interval}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss_weights"] = list(self.loss_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config stored as ``d``; keys that are not fields are ignored (checkpoints of older versions)."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if k == "loss_weights" and isinstance(v, list) else v)
                              for k, v in d.items() if k in names}
        return cls(**kw)
