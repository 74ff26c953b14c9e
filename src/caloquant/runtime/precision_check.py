"""No silent wrong physics: reduced-precision engines are checked against FP32 before they generate.

The first time a reduced-precision engine (bf16, int8, a tuned model) of a model is compiled on a machine, it
generates a small fixed batch of showers that PyTorch FP32 generates too. The batch means of the visible
energy and of the six 3DGAN moments must agree within ``TOLERANCE``. A pass is cached (one small JSON file,
written atomically) per model, precision, engine, batch, CPU, ISA flags, ISA caps and library versions, so
it costs about a second once per machine; a failure is never cached and is checked again on every run.

This is a guard against broken kernels (the AMX BF16 path of issue 12 halved the showers), not a physics
acceptance test: that is the tuner's statistical criterion (docs/quantization.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloquant import __version__
from caloquant._atomic import write_text_atomic
from caloquant.data.formats import ShowerSet
from caloquant.errors import PrecisionError
from caloquant.export.cache import cache_dir
from caloquant.machine import isa_identity
from caloquant.validate import compute_features

log = logging.getLogger("caloquant")

#: Showers of the fixed check batch, spread over the model's energy range, and the seed of their noise.
CHECK_SHOWERS = 16
CHECK_SEED = 20_240_612
#: Version of the check batch's definition, part of the cache key: 2 since an angle model's batch spreads over its
#: angles (``check_angles``), so a pass cached for a batch at 90 degrees only is checked again.
CHECK_BATCH_VERSION = 2
#: Largest relative deviation of the batch-mean visible energy, and of each batch-mean 3DGAN moment, from FP32.
#: Honest reduced precision stays well inside it: BF16 keeps 8 significand bits (2^-9 = 0.2 % rounding per
#: operation, averaging out in sums over 15,625 cells and 16 showers), and the tuner-accepted INT8 recipe of
#: the first ecal25 weights measured 2.5 % (energy, its high-energy showers run 5-7 % low) and 3.1 % (sigma^2_y)
#: on this batch (AMD EPYC, AVX2; docs/deployment.md). 10 % is about three times that, and far below a broken kernel
#: (AMX BF16 in issue 12: -98 % visible energy).
TOLERANCE = 0.10


@dataclass(frozen=True)
class PrecisionCheck:
    """Deviations of one reduced-precision engine from FP32 on the fixed check batch."""

    precision: str
    energy: float  #: relative deviation of the batch-mean visible energy
    moments: float  #: largest relative deviation of a batch-mean 3DGAN moment
    visible_gev: float
    fp32_visible_gev: float

    @property
    def deviation(self) -> float:
        """The larger of the two deviations (infinite where the output was not finite)."""
        return max(self.energy, self.moments)

    @property
    def passed(self) -> bool:
        return bool(self.deviation <= TOLERANCE)

    def describe(self) -> str:
        """One line: precision, both deviations and the tolerance."""
        return f"{self.precision} vs FP32: {self.figures()}"

    def figures(self) -> str:
        """Both deviations and the tolerance, without the precision (for messages that name the model)."""
        return (f"mean visible energy {self.visible_gev:.4g} GeV against {self.fp32_visible_gev:.4g} GeV "
                f"({self.energy:.2%} off), 3DGAN moments up to {self.moments:.2%} off (tolerance {TOLERANCE:.0%})")


def check_inputs(energy_range: tuple[float, float]) -> np.ndarray:
    """Primary energies (GeV) of the fixed check batch: log-spaced over the model's energy range."""
    return np.geomspace(*energy_range, CHECK_SHOWERS)


def check_angles(angle_range_deg: tuple[float, float]) -> np.ndarray:
    """Incidence angles (deg) of the fixed check batch: uniform over the model's angle range in a fixed draw that
    does not follow the energies, so an angle model is checked at its tilts too (90 for a perpendicular model)."""
    return np.random.default_rng([CHECK_SEED, 1]).uniform(*angle_range_deg, CHECK_SHOWERS)


def _means(showers: ShowerSet) -> tuple[float, np.ndarray]:
    """Batch-mean visible energy and 3DGAN moments (NaN where the showers are not finite)."""
    if not np.all(np.isfinite(showers.ecal)):
        return float("nan"), np.full(6, np.nan)
    feats = compute_features(showers)
    return float(feats.visible.mean()), feats.moments.mean(axis=0)


def _relative(value: float | np.ndarray, ref: float | np.ndarray) -> float:
    """Largest |value / ref - 1| (infinite where value is not finite)."""
    dev = np.abs(np.asarray(value, dtype=np.float64) - ref) / np.maximum(np.abs(ref), 1e-12)
    return float(np.max(np.where(np.isfinite(dev), dev, np.inf)))


def compare(precision: str, showers: ShowerSet, reference: ShowerSet) -> PrecisionCheck:
    """The check of ``showers`` (reduced precision) against ``reference`` (FP32) for the same inputs."""
    e, m = _means(showers)
    e_ref, m_ref = _means(reference)
    return PrecisionCheck(precision, _relative(e, e_ref), _relative(m, m_ref), e, e_ref)


def check_key(identity: dict[str, Any]) -> str:
    """Cache key of a check: a hash of the model/precision/engine identity, the machine's ISA and versions."""
    versions = {}
    for pkg in ("openvino", "onnxruntime", "torch"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    blob = json.dumps({**identity, "machine": isa_identity(), "versions": versions, "caloquant": __version__,
                       "check_batch": CHECK_BATCH_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def guard(generator: Any, reference: Callable[[], Any], identity: dict[str, Any], *,
          note: str | None = None) -> PrecisionCheck:
    """Check ``generator`` (reduced precision) against the FP32 PyTorch generator ``reference()`` once per machine.

    ``identity`` names the model, precision and engine (it is part of the cache key); ``note`` is logged when
    the check runs (e.g. that a recipe was tuned on another ISA). Raises PrecisionError when it fails.
    """
    path = cache_dir() / "precision-checks" / f"{check_key(identity)}.json"
    if path.exists():
        try:
            cached = PrecisionCheck(**json.loads(path.read_text())["check"])
            if cached.passed:
                return cached
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or from an older layout: check again
    if note:
        log.warning("caloquant: %s", note)
    energies, angles = check_inputs(generator.spec.energy_range), check_angles(generator.spec.angle_range_deg)
    fp32 = reference()
    result = compare(generator.engine.precision, generator.generate(energies, angles, seed=CHECK_SEED),
                     fp32.generate(energies, angles, seed=CHECK_SEED))
    if not result.passed:
        machine = isa_identity()
        raise PrecisionError(f"{result.describe()} on {machine['cpu']} "
                             f"({', '.join(machine['isa']) or 'no AVX2'}"
                             f"{', caps ' + str(machine['caps']) if machine['caps'] else ''}): refusing to "
                             "generate; use --precision fp32, or --fallback-fp32 to fall back automatically")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"identity": identity, "machine": isa_identity(), "check": asdict(result)},
                                       indent=2))
    if note:
        log.warning("caloquant: physics re-checked on this CPU: %s", result.describe())
    return result
