"""A user's own model on the CLI: evaluation/calibration arrays from an .npz file and a metric by name
(``accuracy``, ``mse``) or as ``PATH.py:FUNC``, checked up front so that mistakes are one-line errors."""

from __future__ import annotations

import importlib.util
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from caloquant.errors import InputError, reason, stopped_by
from caloquant.models.registry import sha256_file
from caloquant.quantize.evaluators import PerItemEvaluator
from caloquant.quantize.openvino_backend import as_input, batch_runner, compile_model

#: Most calibration items taken from ``x`` when the file has no ``calib`` array.
DEFAULT_CALIBRATION = 256
#: What reading a damaged or foreign file raises in numpy's .npz reader (zip, zlib, header parsing).
_UNREADABLE = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, KeyError, MemoryError,
               zipfile.BadZipFile, zlib.error)
#: What the dtype kinds refused as model data are.
_KINDS = {"c": "complex numbers", "U": "strings", "S": "byte strings", "V": "records or raw bytes",
          "M": "dates", "m": "time spans", "O": "Python objects"}
#: Built-in metrics: per-item score of (outputs, targets) and whether higher is better.
METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = {
    "accuracy": (lambda out, y: (out.reshape(len(out), -1).argmax(axis=1) == y.reshape(len(y))).astype(float),
                 True),
    "mse": (lambda out, y: ((out - y) ** 2).reshape(len(out), -1).mean(axis=1), False),
}


@dataclass
class UserData:
    """Evaluation inputs ``x``, optional targets ``y``, calibration inputs and the file's identity."""

    x: np.ndarray
    y: np.ndarray | None
    calib: np.ndarray
    calib_key: str
    path: str
    sha256: str


def load_data(path: str | os.PathLike[str]) -> UserData:
    """Read DATA.npz: ``x`` (evaluation inputs), optional ``y`` (labels/targets) and ``calib`` (calibration).

    Each array must hold real numbers (bool, integer or floating point; not complex, strings or records), all
    finite once converted to the model's input type, with one entry per item along the first axis; ``calib``
    items have the shape and type of ``x`` items. Anything else is a one-line InputError naming the array.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such data file")
    try:
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, NpzFile):
            raise InputError(f"{p}: a single .npy array, not an .npz archive of named arrays; save the data with "
                             "numpy.savez(FILE, x=..., y=..., calib=...)")
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except _UNREADABLE as e:
        reason = str(e).splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise InputError(f"{p}: not a readable .npz file ({reason})") from None
    if "x" not in arrays:
        raise InputError(f"{p}: no 'x' array (the evaluation inputs); found {', '.join(arrays) or 'nothing'}")
    x, y = arrays["x"], arrays.get("y")
    _check_numbers(p, "x", x)
    if x.ndim < 1 or len(x) < 2:
        raise InputError(f"{p}: 'x' must hold at least 2 items along its first axis, got shape {x.shape}")
    if y is not None:
        _check_numbers(p, "y", y)
        if y.ndim < 1 or len(y) != len(x):
            raise InputError(f"{p}: 'y' must hold one entry per item of 'x' ({len(x)}), got shape {y.shape}")
        _check_finite(p, "y", y)
    key = "calib" if "calib" in arrays else "x"
    calib = arrays[key] if key == "calib" else x[:DEFAULT_CALIBRATION]
    _check_numbers(p, key, calib)
    if calib.ndim < 1 or calib.shape[1:] != x.shape[1:] or len(calib) == 0:
        raise InputError(f"{p}: 'calib' must hold items of the shape of 'x' items {x.shape[1:]} along its first "
                         f"axis, got shape {calib.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: infinite, refused below
        inputs, calib_inputs = as_input(x), as_input(calib)
    if calib_inputs.dtype != inputs.dtype:
        raise InputError(f"{p}: 'calib' holds {calib.dtype} values and 'x' {x.dtype}; the model gets both as its "
                         "inputs, so give them one type (both integers or both floating point)")
    _check_finite(p, "x", inputs, as_inputs=True)
    if key == "calib":
        _check_finite(p, "calib", calib_inputs, as_inputs=True)
    return UserData(inputs, y, calib_inputs, key, str(p), sha256_file(p))


def _check_numbers(p: Path, name: str, a: np.ndarray) -> None:
    """``a`` holds real numbers (bool, integer or floating point)."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{p}: '{name}' holds {a.dtype} values ({_KINDS.get(a.dtype.kind, 'not numbers')}); "
                         "it must hold real numbers (integer or floating point)")


def _check_finite(p: Path, name: str, a: np.ndarray, as_inputs: bool = False) -> None:
    """No NaN or infinity in ``a`` (``as_inputs``: as the model gets them, float32, so beyond 3.4e38 is infinite)."""
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            item = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
            raise InputError(f"{p}: '{name}' holds {int(bad.sum())} NaN or infinite values (first in item {item}"
                             f"{', as float32 model inputs' if as_inputs else ''}); it must hold finite numbers")


def calibration_batches(data: UserData, batch: int) -> list[np.ndarray]:
    """The calibration inputs in batches of ``batch``."""
    return [data.calib[i:i + batch] for i in range(0, len(data.calib), batch)]


def _user_function(spec: str) -> Callable[..., Any]:
    path, _, name = spec.rpartition(":")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"metric {spec!r}: no such file {p}")
    try:
        module_spec = importlib.util.spec_from_file_location(f"caloquant_user_metric_{p.stem}", p)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - any error in the user's file is reported in one line
        raise InputError(f"metric {spec!r}: cannot import {p} ({type(e).__name__}: {e})") from None
    except (SystemExit, KeyboardInterrupt) as e:  # importing the user's file may not end or interrupt the run
        if stopped_by(e) is None:
            raise
        raise InputError(f"metric {spec!r}: importing {p} {stopped_by(e)}") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise InputError(f"metric {spec!r}: {p} has no function {name!r}")
    return func  # type: ignore[no-any-return]


def metric_evaluator(model: Any, data: UserData, metric: str, higher_is_better: bool | None,
                     batch: int) -> PerItemEvaluator:
    """A per-item evaluator of ``metric`` on ``data``, checked on the FP32 model's outputs of a few items.

    ``mse`` without ``y`` compares with the FP32 outputs. A ``PATH.py:FUNC`` metric is called as
    ``FUNC(outputs, y)`` (``y`` None when the file has none) and must return one finite score per item;
    higher is better unless ``higher_is_better`` says otherwise.
    """
    try:
        run = batch_runner(compile_model(model), batch)
        reference = run(data.x[:2])
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line text
        raise InputError(f"{data.path}: 'x' items of shape {data.x.shape[1:]} and type {data.x.dtype} do not fit "
                         f"the model ({reason(e)})") from None
    y = data.y
    if metric in METRICS:
        score, default = METRICS[metric]
        if metric == "accuracy" and y is None:
            raise InputError(f"{data.path}: metric accuracy needs a 'y' array of labels")
        if metric == "mse" and y is None:
            y = run(data.x)
        elif metric == "mse" and y.shape[1:] != reference.shape[1:]:
            raise InputError(f"{data.path}: 'y' items of shape {y.shape[1:]} do not match the model outputs "
                             f"{reference.shape[1:]}")
    elif ":" in metric:
        func, default = _user_function(metric), True

        def score(out: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
            try:
                return np.asarray(func(out, targets), dtype=np.float64)
            except (SystemExit, KeyboardInterrupt) as e:  # the user's code may not end or interrupt the run
                if stopped_by(e) is None:
                    raise
                raise InputError(f"metric {metric!r} {stopped_by(e)}; it must return one score per item") from None
    else:
        raise InputError(f"unknown metric {metric!r}; use accuracy, mse or PATH.py:FUNC")
    targets = y

    def per_item(out: np.ndarray) -> np.ndarray:
        return score(out, targets)

    try:
        check = score(reference, None if targets is None else targets[:2])
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's metric may raise anything
        raise InputError(f"metric {metric!r} failed on the model outputs ({type(e).__name__}: {e})") from None
    if np.shape(check) != (2,) or not np.all(np.isfinite(check)):
        raise InputError(f"metric {metric!r} must return one finite score per item; for 2 items it returned "
                         f"{str(np.asarray(check).tolist())[:60]}")
    return PerItemEvaluator(data.x, per_item, name=metric.rpartition(":")[2] if ":" in metric else metric,
                            higher_is_better=default if higher_is_better is None else higher_is_better)
