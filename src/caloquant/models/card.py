"""What a model card says about the physics a generator learned: the GFlash tuning of its training MC.

A generator learns the Monte Carlo it was trained on, so everything that compares it with MC (the demo, the bench
table, the quantize tuner's evaluation data, the shipping script) must simulate with the same GFlash tuning. The
card (``<name>.json`` next to shipped or exported weights) names it in ``TUNING_FIELD``; the exported and quantized
model files carry the same field in their metadata. ``card_tuning`` is the one reader of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from caloquant._optional import require
from caloquant.data import ShowerFile, expand_paths
from caloquant.errors import CaloquantError, ModelError

#: Model-card (and model-file metadata) field naming the GFlash tuning of the MC the generator learned: ``none``
#: (plain GFlash; also what an absent field means, for cards older than the field) or a tuning shipped with
#: caloquant (``geant4``: ``caloquant simulate --tuning geant4``).
TUNING_FIELD = "gflash_tuning"


def _shipped() -> dict[str, Any]:
    """The shipped tunings by name (the simulation package is imported only when a card names one: it is slow to
    import, and most commands never need it)."""
    return dict(require("caloquant.simulate.tuning").SHIPPED)


def card_tuning(card: Mapping[str, Any], where: str) -> str:
    """The GFlash tuning a model card (or model-file metadata) records for the generator's training MC: ``none``
    (also when the field is absent) or the name of a shipped tuning; a one-line ModelError for anything else."""
    if "tuning" in card and TUNING_FIELD not in card:
        raise ModelError(f"{where}: the model card field for the GFlash tuning of the training MC is "
                         f"{TUNING_FIELD!r}, not 'tuning'")
    return tuning_name(card.get(TUNING_FIELD, "none"), f"{where}: {TUNING_FIELD}")


def tuning_name(value: Any, where: str) -> str:
    """``value`` when it names a GFlash tuning a card may record (``none`` or a shipped tuning), else a one-line
    ModelError starting with ``where`` (the card's field, or the ``--tuning`` option that overrides it)."""
    if value == "none":
        return "none"
    shipped = _shipped()
    if not isinstance(value, str) or value not in shipped:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ModelError(f"{where}: unknown GFlash tuning {shown} (known: {', '.join(['none', *shipped])})")
    return value


def recorded_tuning(attrs: Mapping[str, Any], where: str) -> str:
    """The name (``none`` or a shipped tuning) of the GFlash tuning that simulated a shower file with these
    attributes, for the card of a generator trained on it. One-line ModelError for Geant4 showers, or for a tuning
    caloquant does not ship (a card names its tuning so that anyone can simulate with it)."""
    engine = str(attrs.get("engine", "gflash"))
    if engine != "gflash":
        raise ModelError(f"{where}: {engine} showers, not GFlash ones: a model card records a GFlash tuning")
    recorded = str(attrs.get("gflash_tuning", "none"))  # files written before tunings existed are plain GFlash
    if recorded == "none":
        return "none"
    tuning = require("caloquant.simulate.tuning")
    try:
        used = tuning.GFlashTuning.from_dict(json.loads(recorded), where)
    except (ValueError, RecursionError, CaloquantError) as e:
        raise ModelError(f"{where}: unreadable gflash_tuning attribute ({str(e).splitlines()[0][:120]})") from None
    if used.is_identity:
        return "none"
    for name in _shipped():
        if tuning.load_tuning(name) == used:
            return str(name)
    raise ModelError(f"{where}: simulated with a GFlash tuning caloquant does not ship (fitted to "
                     f"{used.fitted_to or 'an unknown sample'}); ship it under caloquant/simulate/tunings/ first")


def training_tuning(sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The GFlash tuning of a training set (files, directories, shard manifests or globs, as ``caloquant train``
    takes them): ``recorded_tuning`` of every file, which must agree (one-line ModelError otherwise)."""
    names: dict[str, str] = {}
    for path in expand_paths(sources):
        with ShowerFile(path) as f:
            names.setdefault(recorded_tuning(f.attrs, str(path)), str(path))
    if len(names) > 1:
        raise ModelError("training files simulated with different GFlash tunings: "
                         + ", ".join(f"{name} ({path})" for name, path in sorted(names.items())))
    return next(iter(names))
