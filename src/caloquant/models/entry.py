"""The entry-point shift, written once for NumPy arrays and torch tensors alike.

The reference MC places each entry point uniformly within its cell; a generator with ``entry_jitter_cells`` > 0
learns the centred shower and every shower is moved rigidly by offsets uniform in +-amplitude cells along x and y,
drawn from four of its own latent entries. In training the shift is the generator's last stage (torch, so that
gradients reach the cells: ``models.layers.EntryShift``); exported graphs and inference engines stop before it and
``ModelSpec.to_physical`` applies it while decoding (the fused kernel of ``models.decode``, held to ``shift_cells``
by the tests), where it costs a pass over the cells instead of two non-integer powers inside the graph (about 0.7 ms
per shower in OpenVINO on a 2-core Xeon, 2026-12-06).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

#: Index of the first of the four latent entries that drive the shift, per architecture: the ecal25 latent is
#: noise times E/100 (the ratio of two entries does not see the energy), the angle51 latent [E/100, theta, noise]
#: (its noise times E/E0 or as drawn, ``ModelSpec.noise_energy_gev``: the ratio does not see that either).
ENTRY_LATENT = {"ecal25": 0, "angle51": 2}


def entry_offsets(z: Any, amplitude: float, first: int, xp: ModuleType) -> tuple[Any, Any]:
    """The (x, y) offsets in cells of each shower of latent batch ``z`` (N, latent), uniform in +-``amplitude``:
    the arctangent of the ratio of two independent standard normals, over pi, is uniform on (-1/2, 1/2).
    ``xp`` is ``numpy`` or ``torch``, the module of ``z``."""
    scale = 2.0 * amplitude / math.pi

    def uniform(a: Any, b: Any) -> Any:
        return scale * xp.arctan(a / xp.where(b == 0, 1e-30, b))

    return uniform(z[:, first], z[:, first + 1]), uniform(z[:, first + 2], z[:, first + 3])


def shift_cells(cells: Any, offset: Any, axis: int) -> Any:
    """Cells (N, X, Y, Z), energy-linear, moved by ``offset`` (N,) cells in (-1, 1) along ``axis`` (1 or 2): each
    cell's energy shared linearly with its neighbour, as binning a shower moved rigidly by that much would share
    it if the energy were spread evenly within each cell; energy moved past the window's edge is lost, as the
    MC's is. Works on NumPy arrays and torch tensors (gradients pass)."""
    off = offset.reshape(-1, 1, 1, 1)
    up, down = (abs(off) + off) / 2, (abs(off) - off) / 2   # the part moving to higher, to lower indices

    def part(start: int | None, stop: int | None) -> tuple[slice, ...]:
        return tuple(slice(start, stop) if i == axis else slice(None) for i in range(cells.ndim))

    out = cells * (1 - up - down)
    out[part(1, None)] += up * cells[part(None, -1)]
    out[part(None, -1)] += down * cells[part(1, None)]
    return out


def shift_showers(cells: Any, z: Any, amplitude: float, first: int, xp: ModuleType) -> Any:
    """Energy-linear cells (N, X, Y, Z) of the showers of latent batch ``z``, each moved by its own offsets."""
    dx, dy = entry_offsets(z, amplitude, first, xp)
    return shift_cells(shift_cells(cells, dx, 1), dy, 2)
