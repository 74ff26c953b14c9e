"""Build models, load generators from shipped weights or checkpoints, and verify what is loaded.

Shipped weights live in ``caloquant/weights/<name>.pt`` (a generator ``state_dict``) next to
``<name>.json`` (its ModelSpec, sha256, the GFlash tuning of its training MC and model card figures). Everything
is loaded with ``weights_only=True``: no pickled code is ever executed.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caloquant._atomic import sha256_file
from caloquant._optional import require
from caloquant.errors import ModelError
from caloquant.models.card import card_tuning
from caloquant.models.spec import ModelSpec, shower_noise

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_FORMAT = "caloquant-checkpoint-v1"


def build_generator(spec: ModelSpec) -> nn.Module:
    """A freshly initialised generator of the spec's architecture."""
    gan3d = require("caloquant.models.gan3d")
    if spec.arch == "ecal25":
        return gan3d.EcalEnergyGenerator(entry_jitter=spec.entry_jitter_cells, power=spec.xpower)
    return gan3d.AngleGenerator(entry_jitter=spec.entry_jitter_cells, power=spec.xpower, angle_gain=spec.angle_gain)



def centred(module: nn.Module) -> nn.Module:
    """A copy of a generator that stops before its entry-point shift, as exports and inference engines run it:
    ``ModelSpec.to_physical(raw, latent)`` then shifts while decoding (``models.entry``). The module itself when it
    has no shift; parameter and layer names are kept, so tuned recipes name the same layers."""
    if getattr(module, "entry", None) is None:
        return module
    plain = copy.deepcopy(module)
    plain.entry = None  # type: ignore[assignment]
    return plain

#: Adversaries ``build_discriminator`` can make: the 3DGAN reference discriminator, or the light critic.
CRITICS = ("reference", "light")


def build_discriminator(spec: ModelSpec, dropout: float = 0.2, kind: str = "reference") -> nn.Module:
    """A freshly initialised adversary for the spec's architecture: the reference discriminator or the light critic."""
    if kind == "light":
        critic = require("caloquant.models.critic")
        return critic.LightCritic(spec.window.shape, xscale=spec.xscale, power=spec.xpower,
                                  angle=spec.arch == "angle51")
    if kind != "reference":
        raise ModelError(f"unknown critic {kind!r} ({' or '.join(CRITICS)})")
    gan3d = require("caloquant.models.gan3d")
    if spec.arch == "ecal25":
        return gan3d.EcalEnergyDiscriminator(power=spec.xpower, dropout=dropout)
    return gan3d.AngleDiscriminator(power=spec.xpower, dropout=dropout)


def _weights_dir() -> Path:
    return Path(str(resources.files("caloquant") / "weights"))


def available_models() -> list[str]:
    """Short names of the shipped pretrained generators."""
    d = _weights_dir()
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.pt").exists())


def model_card(name: str) -> dict[str, Any]:
    """The JSON card of a shipped model (spec, sha256, training and physics figures)."""
    path = _weights_dir() / f"{name}.json"
    if not path.exists():
        known = ", ".join(available_models()) or "none"
        raise ModelError(f"unknown model {name!r} (shipped models: {known})")
    return json.loads(path.read_text())


def safe_load(path: str | os.PathLike[str]) -> Any:
    """torch.load with weights_only=True, turning every kind of corrupt file into a one-line ModelError."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model file")
    torch = require("torch")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for truncated/corrupt files
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise ModelError(f"{p}: refused: it holds pickled objects besides tensors (code could run on "
                             "loading); only plain weights files and caloquant checkpoints are loaded") from None
        raise ModelError(f"{p}: not a readable PyTorch weights file (truncated or corrupt: "
                         f"{type(e).__name__})") from None


def load_state(module: nn.Module, state: dict[str, Any], what: str) -> None:
    """load_state_dict with a one-line error when the weights belong to another architecture."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ModelError(f"{what}: weights do not fit this architecture ({first[:160]})") from None


def _read_card(path: Path, weights: Path) -> dict[str, Any]:
    """The model card next to a bare state_dict (one-line ModelError when missing or malformed)."""
    if not path.exists():
        raise ModelError(f"{weights}: a bare state_dict needs its model card {path.name} next to it")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable model card ({type(e).__name__})") from None
    if not isinstance(card, dict) or not isinstance(card.get("spec"), dict):
        raise ModelError(f"{path}: not a caloquant model card (no 'spec')")
    return card


def shipped_recipe(gen: LoadedGenerator) -> Path | None:
    """The quantization recipe shipped next to the generator's weights (``<name>.recipe.json``), if there is one."""
    recipe = Path(gen.source).with_suffix(".recipe.json")
    return recipe if recipe.exists() else None


@dataclass
class LoadedGenerator:
    """A generator in eval mode with its spec, the identity of the weights it came from and the GFlash tuning of
    the MC it learned (``caloquant.models.card.TUNING_FIELD`` of its card)."""

    module: nn.Module
    spec: ModelSpec
    source: str
    sha256: str
    tuning: str = "none"


def load_generator(model: str | os.PathLike[str], *, expect_arch: str | None = None) -> LoadedGenerator:
    """A shipped short name (``ecal25``), a shipped-style ``.pt`` with its ``.json`` card, or a training checkpoint."""
    text = str(model)
    p = Path(text)
    if not p.exists() and os.sep not in text and not text.endswith((".pt", ".pth")):
        card = model_card(text)
        p = _weights_dir() / f"{text}.pt"
        digest = sha256_file(p)
        if digest != card["sha256"]:
            raise ModelError(f"{p}: sha256 {digest[:12]}... does not match the model card ({card['sha256'][:12]}...)")
        spec = ModelSpec.from_dict(card["spec"])
        tuning = card_tuning(card, str(p.with_suffix(".json")))
        state = safe_load(p)
    else:
        obj = safe_load(p)
        digest = sha256_file(p)
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            spec = ModelSpec.from_dict(obj["spec"])
            tuning = card_tuning(obj, str(p))
            state = obj.get("generator_ema") or obj["generator"]
        else:
            card = _read_card(p.with_suffix(".json"), p)
            if "sha256" in card and digest != card["sha256"]:
                raise ModelError(f"{p}: sha256 {digest[:12]}... does not match its model card "
                                 f"({str(card['sha256'])[:12]}...): the weights were modified or belong elsewhere")
            spec = ModelSpec.from_dict(card["spec"])
            tuning = card_tuning(card, str(p.with_suffix(".json")))
            state = obj
    if expect_arch is not None and spec.arch != expect_arch:
        raise ModelError(f"{p}: holds a {spec.arch} model, expected {expect_arch}")
    if not isinstance(state, dict):
        raise ModelError(f"{p}: does not contain a generator state_dict")
    gen = build_generator(spec)
    load_state(gen, state, str(p))
    gen.eval()
    return LoadedGenerator(gen, spec, str(p), digest, tuning)


def sample_showers(module: nn.Module, spec: ModelSpec, energies: np.ndarray, angles_deg: np.ndarray | None, *,
                   seed: int, batch: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """Physical showers (GeV, (N, X, Y, Z)) from a PyTorch generator in eval mode, noise drawn per shower index."""
    torch = require("torch")
    was_training = module.training
    module.eval()
    noise = shower_noise(seed, np.arange(len(energies)), spec.noise_size)
    lat = spec.latent(energies, angles_deg, noise)
    out = []
    with torch.no_grad():
        for s in range(0, len(lat), batch):
            z = torch.from_numpy(lat[s : s + batch]).to(device)
            out.append(spec.to_physical(module(z).cpu().numpy()))
    module.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, *spec.window.shape), np.float32)


def calibrate_batchnorm(module: nn.Module, spec: ModelSpec, n: int, *, seed: int, batch: int,
                        device: torch.device | str = "cpu") -> None:
    """Recompute the BatchNorm running statistics of a generator for its own weights ("precise BN"): the plain
    average of the training-mode batch statistics of ``n`` showers in batches of ``batch`` (the training batch),
    energies and angles uniform over the spec's ranges, in fp32, each rank on its own.

    Training keeps running statistics with momentum 0.01, about 100 steps behind the live weights, and a moving
    average of the weights (EMA) inherits them unchanged: the generator then runs in eval mode on statistics of
    other weights. On campaign step 48397 (2026-12-06) recomputing them moved the energy scale by 0.5-0.8 % and the
    sampling-fraction error against 10,000 MC showers from 0.0116 to 0.0082 (6,400 showers; 0.0089 with 1,024;
    docs/training.md)."""
    torch, layers = require("torch"), require("caloquant.models.layers")
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or n < 1:
        return
    n = -(-n // batch) * batch  # whole batches: a short last one would weigh its noisier statistics alike
    rng = np.random.default_rng(seed)
    energies = rng.uniform(*spec.energy_range, n)
    angles = rng.uniform(*spec.angle_range_deg, n)
    lat = torch.from_numpy(spec.latent(energies, angles, shower_noise(seed, np.arange(n), spec.noise_size)))
    momenta = [m.momentum for m in norms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        if isinstance(m, layers.GlobalBatchNorm3d):
            m.sync = False  # statistics of this rank's showers, without the other ranks
    module.train()
    try:
        with torch.no_grad():
            for s in range(0, n, batch):
                module(lat[s : s + batch].to(device))
    finally:
        module.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            if isinstance(m, layers.GlobalBatchNorm3d):
                m.sync = True
