"""Validation plots and the HTML report (matplotlib + mplhep, imported only when a plot is asked for)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "average_images": "figures", "cell_spectrum": "figures", "feature_histograms": "figures",
    "moments_vs_energy": "figures", "png_bytes": "figures", "profiles": "figures",
    "sampling_fraction_vs_energy": "figures", "tilt_response": "figures", "write_report": "report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"caloquant.plotting.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'caloquant.plotting' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
