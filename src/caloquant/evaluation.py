"""How the tuner's physics evaluator judges a model, defined once for the tuner, the quantize workflow, bench, the
demo and the CLIs. It sits at the bottom of the package (no numpy) so the CLI can declare its option defaults
from it without loading the library; ``caloquant.quantize.PhysicsEvaluator`` is the evaluator that uses it."""

from __future__ import annotations

from dataclasses import dataclass

from caloquant.errors import InputError

#: Fewest showers (generated or reference) the moment metric is computed on.
MIN_SHOWERS = 16
#: Most showers (generated or reference) one evaluation holds in memory (62 KB each for 25x25x25 cells).
MAX_SHOWERS = 1_000_000


@dataclass(frozen=True)
class EvaluationSettings:
    """Generated showers per evaluation, reference-MC showers, the seed of both, and the inference batch."""

    n_showers: int = 2048
    n_reference: int = 3000
    seed: int = 1
    batch: int = 128

    def check(self) -> EvaluationSettings:
        """These settings, or a one-line InputError for sizes the metric cannot use."""
        if self.n_showers < MIN_SHOWERS or self.n_reference < MIN_SHOWERS:
            raise InputError(f"--showers and --reference must be at least {MIN_SHOWERS}")
        if self.n_showers > MAX_SHOWERS or self.n_reference > MAX_SHOWERS:
            raise InputError(f"--showers and --reference must be at most {MAX_SHOWERS:,} "
                             f"(got {self.n_showers}, {self.n_reference})")
        if self.batch < 1:
            raise InputError(f"the evaluation batch must be positive, got {self.batch}")
        return self


#: The settings ``caloquant quantize`` tunes with unless told otherwise.
DEFAULT_EVALUATION = EvaluationSettings()
