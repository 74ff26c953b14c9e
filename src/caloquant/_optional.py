"""Optional dependencies: the one place that imports them, with a one-line error naming the extra to install.

The heavy or optional packages (torch, openvino, nncf, onnx, onnxruntime, matplotlib, scikit-learn, Geant4,
Dask) and caloquant's modules built on them are imported only through ``require``, when a function needs them,
so that the numpy-only parts (specs, files, metrics) and the CLI's start-up never load them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from caloquant.errors import InputError

#: Optional top-level package -> the pyproject extra that installs it.
EXTRAS = {
    "torch": "train",
    "openvino": "deploy", "nncf": "deploy", "onnx": "deploy", "onnxruntime": "deploy",
    "matplotlib": "validate", "mplhep": "validate", "sklearn": "validate",
    "geant4_pybind": "geant4",
    "dask": "cluster", "distributed": "cluster",
}


def require(module: str) -> ModuleType:
    """Import ``module`` (an optional package, or a caloquant module built on one); InputError naming the extra
    to install when the package is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        needed = "" if module.split(".")[0] == top else f" (needed by {module})"
        raise InputError(f"{top} is not installed{needed}: pip install 'caloquant[{EXTRAS[top]}]'") from None
