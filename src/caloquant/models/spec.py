"""What a generator is: architecture, window, pre-processing and trained range, plus its latent construction.

A ``ModelSpec`` travels with every checkpoint and every exported model so that any engine can turn
(energies, angles, seeds) into latent vectors and raw outputs back into GeV exactly the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from caloquant.errors import InputError, ModelError
from caloquant.geometry import WINDOW_25, WINDOW_51, Window
from caloquant.models.cellmap import CellMap
from caloquant.models.decode import decode
from caloquant.models.entry import ENTRY_LATENT, entry_offsets

ARCHITECTURES = ("ecal25", "angle51")


#: Largest ``ModelSpec.angle_gain``.
MAX_ANGLE_GAIN = 1000.0
#: Largest ``ModelSpec.noise_energy_gev``.
MAX_NOISE_ENERGY_GEV = 10_000.0


@dataclass(frozen=True)
class ModelSpec:
    """Architecture name plus everything needed to condition it and decode its output."""

    arch: str = "ecal25"
    xscale: float = 100.0
    xpower: float = 0.85
    energy_range: tuple[float, float] = (10.0, 500.0)
    angle_range_deg: tuple[float, float] = (90.0, 90.0)
    #: Readout threshold (GeV) applied to decoded showers, as the detector's is to the MC: cells below it read 0.
    #: 0 (the default, and what older cards and checkpoints mean) decodes every cell.
    cell_threshold_gev: float = 0.0
    #: Half-width (cells) of the uniform in-cell shift of each shower's entry point in x and y that the generator's
    #: output stage adds in training (``models.layers.EntryShift``) and decoding adds after exported graphs
    #: (``to_physical``), as the MC's detector does. 0 (the default, and what older cards and checkpoints mean): none.
    entry_jitter_cells: float = 0.0
    #: Fitted response stage of decoding (``models.cellmap``): read-out cell energies mapped to the MC's spectrum,
    #: each shower's visible energy kept. None (the default, and what older cards and checkpoints mean): no map.
    cell_map: CellMap | None = None
    #: How the angle model's first layer sees theta: 0 (the default, the Keras model, and what older cards and
    #: checkpoints mean) as it is, in radians; g > 0 as g (theta - pi/2), centred and amplified, so that the
    #: weights that carry the angle learn g-fold faster (docs/training.md). The latent is theta in radians either way.
    angle_gain: float = 0.0
    #: The angle model's noise: 0 (the default, the Keras model's input [E/100, theta, z], and what older cards and
    #: checkpoints mean) as drawn; E0 > 0 (GeV) multiplied by E/E0, as the fixed-angle model's noise is by E/100
    #: (the 3DGAN's older angle input; E0 = 100 is it exactly). A ReLU generator adds noise of one size at every
    #: energy, so with the noise as drawn its relative spread falls as 1/E (docs/training.md); scaled, it stays.
    noise_energy_gev: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ModelError(f"unknown architecture {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        if not 0.0 <= self.cell_threshold_gev < 1.0:
            raise ModelError(f"cell threshold {self.cell_threshold_gev!r} GeV is not in [0, 1)")
        if not 0.0 <= self.entry_jitter_cells <= 1.0:
            raise ModelError(f"entry jitter {self.entry_jitter_cells!r} cells is not in [0, 1]")
        if not 0.0 <= self.angle_gain <= MAX_ANGLE_GAIN or (self.angle_gain and self.arch != "angle51"):
            raise ModelError(f"angle gain {self.angle_gain!r} is not in [0, {MAX_ANGLE_GAIN:g}] for a model with "
                             "an angle input, or 0")
        if not 0.0 <= self.noise_energy_gev <= MAX_NOISE_ENERGY_GEV or (self.noise_energy_gev
                                                                      and self.arch != "angle51"):
            raise ModelError(f"noise energy {self.noise_energy_gev!r} GeV is not in [0, {MAX_NOISE_ENERGY_GEV:g}] "
                             "for a model with an angle input, or 0")
        if self.cell_map is not None and self.cell_threshold_gev <= 0:
            raise ModelError("a cell map needs a readout threshold (cell_threshold_gev > 0)")

    @property
    def window(self) -> Window:
        return WINDOW_25 if self.arch == "ecal25" else WINDOW_51

    @property
    def latent_size(self) -> int:
        return 200 if self.arch == "ecal25" else 256

    @property
    def noise_size(self) -> int:
        """Random numbers per shower (the angle model spends two latent entries on E and theta)."""
        return self.latent_size if self.arch == "ecal25" else self.latent_size - 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["energy_range"] = list(self.energy_range)
        d["angle_range_deg"] = list(self.angle_range_deg)
        d.pop("cell_map")
        for key in ("angle_gain", "noise_energy_gev"):  # 0 is what older specs mean: left out, their digests stay
            if not d[key]:
                d.pop(key)
        if self.cell_map is not None:
            d["cell_map"] = self.cell_map.to_dict()
        return d

    def digest(self) -> str:
        """Short hash of the spec (decoding included): part of the cache keys of exported models and checks, so that
        a new cell map or threshold on the same weights is never served a stale entry."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                arch=str(d["arch"]),
                xscale=float(d["xscale"]),
                xpower=float(d["xpower"]),
                energy_range=(float(d["energy_range"][0]), float(d["energy_range"][1])),
                angle_range_deg=(float(d["angle_range_deg"][0]), float(d["angle_range_deg"][1])),
                cell_threshold_gev=float(d.get("cell_threshold_gev", 0.0)),
                entry_jitter_cells=float(d.get("entry_jitter_cells", 0.0)),
                cell_map=CellMap.from_dict(d["cell_map"]) if d.get("cell_map") is not None else None,
                angle_gain=float(d.get("angle_gain", 0.0)),
                noise_energy_gev=float(d.get("noise_energy_gev", 0.0)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelError(f"model metadata is incomplete or malformed ({e})") from None

    # -- conditioning ---------------------------------------------------------------------------------

    def check_conditions(self, energies: np.ndarray, angles_deg: np.ndarray | None, *,
                         allow_extrapolation: bool = False) -> None:
        """Refuse conditions outside the trained range unless extrapolation is allowed explicitly."""
        e = np.asarray(energies, dtype=float)
        if e.size and (not np.all(np.isfinite(e)) or np.any(e <= 0)):
            raise InputError("energies must be finite and positive")
        if allow_extrapolation or not e.size:
            return
        lo, hi = self.energy_range
        if e.min() < lo - 1e-9 or e.max() > hi + 1e-9:
            raise InputError(
                f"energies {e.min():g}-{e.max():g} GeV are outside the model's trained range {lo:g}-{hi:g} GeV "
                "(use --allow-extrapolation to generate anyway)"
            )
        if angles_deg is not None and self.arch == "angle51":
            a = np.asarray(angles_deg, dtype=float)
            alo, ahi = self.angle_range_deg
            if a.size and (a.min() < alo - 1e-9 or a.max() > ahi + 1e-9):
                raise InputError(
                    f"angles {a.min():g}-{a.max():g} deg are outside the trained range {alo:g}-{ahi:g} deg "
                    "(use --allow-extrapolation to generate anyway)"
                )

    def latent(self, energies: np.ndarray, angles_deg: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        """Generator input from conditions and per-shower noise (shape (N, noise_size)), float32."""
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1) / np.float32(100.0)
        noise = np.asarray(noise, dtype=np.float32)
        if self.arch == "ecal25":
            return (noise * e).astype(np.float32)
        noise = self.scaled_noise(noise, e)
        if angles_deg is None:
            angles_deg = np.full(len(e), 90.0)
        theta = np.radians(np.asarray(angles_deg, dtype=np.float64)).astype(np.float32).reshape(-1, 1)
        return np.concatenate([e, theta, noise], axis=1).astype(np.float32)

    def scaled_noise(self, noise: Any, e_over_100: Any) -> Any:
        """The angle model's noise as its latent holds it, at energies E/100 (arrays or tensors, (N, 1)): times E/E0
        for a spec that scales it (``noise_energy_gev`` E0 > 0), else as drawn. One definition for the numpy
        latents and the training loop's."""
        return noise * (e_over_100 * (100.0 / self.noise_energy_gev)) if self.noise_energy_gev else noise

    def to_physical(self, raw: np.ndarray, latent: np.ndarray | None = None) -> np.ndarray:
        """Raw generator output ((xscale * E) ** xpower) to visible cell energy in GeV, through the cell map when the
        spec has one, cells below the readout threshold (``cell_threshold_gev``) set to 0.

        ``latent``: the generator inputs of these showers, for output of an export or inference engine, whose graph
        stops before the entry-point shift (``models.registry.centred``): decoding then moves each shower by its
        offsets (``entry_jitter_cells``). Leave it out for the output of the whole PyTorch module, which shifted."""
        x = np.asarray(raw, dtype=np.float32)
        dx = dy = None
        if latent is not None and self.entry_jitter_cells > 0:
            if len(latent) != len(x):
                raise ModelError(f"{len(latent)} latent rows for {len(x)} showers")
            dx, dy = entry_offsets(np.asarray(latent, dtype=np.float32), self.entry_jitter_cells,
                                   ENTRY_LATENT[self.arch], np)
        if x.ndim != 4:
            if dx is not None or self.cell_map is not None:
                raise ModelError(f"decoding moves and maps whole showers (N, X, Y, Z), got shape {x.shape}")
            return decode(x.reshape(1, 1, 1, -1), xpower=self.xpower, xscale=self.xscale,
                          threshold=self.cell_threshold_gev).reshape(x.shape)
        maps = self.cell_map.decode_args(x.shape[1:]) if self.cell_map is not None else {}
        return decode(x, xpower=self.xpower, xscale=self.xscale, dx=dx, dy=dy, threshold=self.cell_threshold_gev,
                      **maps)

    @property
    def raw_threshold(self) -> float:
        """The readout threshold in the training representation ((xscale * E) ** xpower); 0 without one."""
        return float((self.xscale * self.cell_threshold_gev) ** self.xpower)

    def to_training(self, cells_gev: np.ndarray) -> np.ndarray:
        """Cell energies in GeV to the representation the GAN is trained on."""
        return np.power(np.asarray(cells_gev, dtype=np.float32) * np.float32(self.xscale),
                        np.float32(self.xpower)).astype(np.float32)


def shower_noise(seed: int, indices: np.ndarray, size: int) -> np.ndarray:
    """Standard-normal latent noise for each shower index, independent of batching and stream count."""
    out = np.empty((len(indices), size), dtype=np.float32)
    for row, idx in enumerate(np.asarray(indices, dtype=np.int64)):
        out[row] = np.random.default_rng([int(seed), 0x3D6A, int(idx)]).standard_normal(size, dtype=np.float32)
    return out


DEFAULT_SPECS = {
    "ecal25": ModelSpec("ecal25", xscale=100.0, xpower=0.85, energy_range=(10.0, 500.0),
                        angle_range_deg=(90.0, 90.0)),
    "angle51": ModelSpec("angle51", xscale=100.0, xpower=0.85, energy_range=(10.0, 500.0),
                         angle_range_deg=(60.0, 120.0)),
}

