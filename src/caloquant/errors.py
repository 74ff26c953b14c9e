"""Typed errors. The CLI turns every CaloquantError into a one-line message and exit code 2.

Errors that carry a result of a higher stage live with that stage (``caloquant.quantize.AccuracyNotReachedError``),
so that this module imports nothing of caloquant."""

from __future__ import annotations


class CaloquantError(Exception):
    """Base class for user-facing errors (bad input, mismatched files, unmet criteria)."""

    exit_code: int = 2


class InputError(CaloquantError):
    """An argument or option value is invalid."""


class DataFormatError(CaloquantError):
    """A file is missing, unreadable, or not in a layout caloquant understands."""


class GeometryMismatchError(CaloquantError):
    """Two samples or a sample and a model use different readout windows."""


class ModelError(CaloquantError):
    """A model or checkpoint cannot be loaded or does not fit the request."""


class PrecisionError(CaloquantError):
    """A reduced-precision engine deviates from FP32 beyond the guard's tolerance on this machine."""


class SimulationError(CaloquantError):
    """A simulation engine failed (e.g. a Geant4 worker process died)."""


class Interrupted(CaloquantError):
    """A run was interrupted (SIGINT: exit 130, SIGTERM: exit 143); partial output was discarded or left resumable."""

    exit_code = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
