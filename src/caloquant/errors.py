"""Typed errors. The CLI turns every CaloquantError into a one-line message and exit code 2.

Errors that carry a result of a higher stage live with that stage (``caloquant.quantize.AccuracyNotReachedError``),
so that this module imports nothing of caloquant."""

from __future__ import annotations

import re
import signal

#: Lines of a native library's error text that only say where it was raised (OpenVINO: "Exception from
#: src/inference/src/cpp/core.cpp:84:", "Check 'x' failed at src/.../cpu_memory_desc.h:99:").
_WHERE = re.compile(r"^(Exception from \S+:\d+:?|Check .* failed at \S+:\d+:?)$")


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


class TrainingDiverged(CaloquantError):
    """Training stopped because the generator died (every cell of its showers 0); the last checkpoint is kept."""


class Interrupted(CaloquantError):
    """A run was interrupted (SIGINT: exit 130, SIGTERM: exit 143); partial output was discarded or left resumable."""

    exit_code = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def reason(error: BaseException, limit: int = 200) -> str:
    """The informative text of ``error`` on one line, for a one-line message: the lines that only locate the error
    in a native library's sources are dropped (OpenVINO puts them first), the rest joined and cut at ``limit``."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    text = " ".join([ln for ln in lines if not _WHERE.match(ln)] or lines) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def stopped_by(error: BaseException) -> str | None:
    """What a SystemExit or KeyboardInterrupt raised by code called from a command did ("called sys.exit(3)"), or
    None for a real interrupt: with the CLI's handlers installed Ctrl-C raises ``Interrupted``, so a bare
    KeyboardInterrupt then comes from the code itself (without them, it may be the user's Ctrl-C)."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    if isinstance(error, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return "raised KeyboardInterrupt"
    return None
