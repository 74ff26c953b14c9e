"""Reference Monte Carlo: GFlash-style electron showers in the CLIC-like Si-W ECAL.

Per shower (all random numbers from that shower's own generator, seeded by (seed, shower index), so the
output does not depend on the chunk size):

1. draw the primary energy and angle, then correlated (ln T, ln alpha) of the individual profile;
2. energy per layer from the regularised incomplete gamma function along the (tilted) shower axis;
3. sampling fluctuation per layer, Gamma(mean dE, variance c^2 dE) with the layer's stochastic term c,
   times the layer's visible (silicon) fraction: the resolution emerges, it is not imposed;
4. N_S spots spread over the layers by the spot profile, each at a uniform depth inside its layer with a
   core/tail radius drawn at its own tau and a uniform phi, carrying an equal share of its layer's energy;
5. spots are binned into 5.1 mm cells of the readout window, then the cell threshold is applied.

Energy leaving the back of the stack or the window is lost, so the raw visible sum keeps its physical
non-linearity.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from numba import njit
from scipy.special import gammainc

from caloquant.data.formats import ShowerSet
from caloquant.errors import InputError
from caloquant.geometry import CLIC_ECAL, Calorimeter, Window, parse_window
from caloquant.simulate.gflash import (
    Medium,
    correlated_profile,
    longitudinal_params,
    mean_depth,
    number_of_spots,
    radial_params,
    spot_profile,
    tau_scale,
)
from caloquant.simulate.tuning import IDENTITY, GFlashTuning

E_MIN_GEV, E_MAX_GEV = 1.0, 1000.0
#: Step in tau = depth / T' of the radial-parameter table (the profile is smooth on this scale).
TAU_STEP = 0.02
#: Cell threshold: half the mean energy a minimum-ionising particle leaves in one sensor (GeV).
MIP_THRESHOLD_FRACTION = 0.5
#: Most showers one run may write (about 10 TB of 25x25x25 showers; larger requests are typos).
MAX_SHOWERS = 1_000_000_000


@dataclass(frozen=True)
class Spectrum:
    """Primary energies: a fixed value, or a uniform / log-uniform range (GeV)."""

    low: float
    high: float
    kind: str = "uniform"

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "log"):
            raise InputError(f"unknown spectrum {self.kind!r}; choose uniform or log")
        if not (E_MIN_GEV <= self.low <= self.high <= E_MAX_GEV):
            raise InputError(
                f"energy range {self.low:g}:{self.high:g} GeV is outside {E_MIN_GEV:g}-{E_MAX_GEV:g} GeV "
                "or reversed"
            )

    def sample(self, u: float) -> float:
        if self.kind == "log":
            return float(np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low))))
        return self.low + u * (self.high - self.low)


@dataclass(frozen=True)
class AngleRange:
    """Incidence angles theta in degrees (90 = perpendicular), fixed or uniform in a range."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (30.0 <= self.low <= self.high <= 150.0):
            raise InputError(f"angle range {self.low:g}:{self.high:g} deg is outside 30-150 deg or reversed")

    def sample(self, u: float) -> float:
        return float(np.deg2rad(self.low + u * (self.high - self.low)))


def check_count(n: int, what: str = "--n") -> int:
    """A shower count: positive and at most MAX_SHOWERS (beyond it no disk holds the output)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise InputError(f"{what} must be an integer, got {n!r}")
    if n <= 0:
        raise InputError(f"{what} must be positive, got {n}")
    if n > MAX_SHOWERS:
        raise InputError(f"{what} {n} exceeds the {MAX_SHOWERS:,} showers one run may write")
    return int(n)


#: Seeds are stored as int64 HDF5 attributes and fed to numpy's SeedSequence (non-negative).
MAX_SEED = 2**63 - 1


def check_seed(seed: int, what: str = "--seed") -> int:
    """A seed: an integer in [0, 2**63 - 1] (numpy seeds are non-negative; files record it as an int64)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputError(f"{what} must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"{what} must be between 0 and {MAX_SEED}, got {seed}")
    return int(seed)


def parse_range(text: str | float | tuple[float, float], what: str) -> tuple[float, float]:
    """'100' -> (100, 100); '10:500' -> (10, 500); numbers and tuples pass through."""
    if isinstance(text, tuple):
        return float(text[0]), float(text[1])
    if isinstance(text, (int, float)):
        return float(text), float(text)
    parts = str(text).split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number or a MIN:MAX range") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise InputError(f"{what} {text!r} is not a number or a MIN:MAX range")


@dataclass(frozen=True)
class ShowerSimulator:
    """Vectorised GFlash shower generator for one calorimeter and readout window."""

    window: Window
    calorimeter: Calorimeter = CLIC_ECAL
    threshold_gev: float | None = None
    tuning: GFlashTuning = IDENTITY

    def __post_init__(self) -> None:
        self.tuning.structure_scale(len(self.calorimeter.structures))  # checks the number of scales
        if self.window.nz != self.calorimeter.n_layers:
            raise InputError(f"window {self.window} has {self.window.nz} layers, the calorimeter has "
                             f"{self.calorimeter.n_layers}")

    @property
    def cell_threshold(self) -> float:
        if self.threshold_gev is not None:
            return self.threshold_gev
        s = self.calorimeter.front.sensor
        return MIP_THRESHOLD_FRACTION * s.dedx_mip * s.density * self.calorimeter.front.sensor_mm / 10.0 / 1000.0

    def simulate(
        self,
        n: int,
        spectrum: Spectrum,
        angles: AngleRange = AngleRange(90.0, 90.0),
        *,
        seed: int = 0,
        start_index: int = 0,
    ) -> ShowerSet:
        """Showers with indices [start_index, start_index + n) of the stream defined by ``seed``."""
        cal, win = self.calorimeter, self.window
        front = Medium.of(cal.front)
        rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, start_index + i])))
                for i in range(n)]
        head = np.array([r.random(2) for r in rngs]).reshape(n, 2)
        energy = np.array([spectrum.sample(u) for u in head[:, 0]])
        theta = np.array([angles.sample(u) for u in head[:, 1]])

        # 1. individual longitudinal profile, redrawing (per shower, from its own stream) until alpha > 1
        lp = longitudinal_params(energy, front)
        if not self.tuning.is_identity:
            d_t, d_a = self.tuning.ln_shifts(energy)
            spread = self.tuning.profile_fluctuation_scale
            lp = replace(lp, mean_ln_t=lp.mean_ln_t + d_t, mean_ln_alpha=lp.mean_ln_alpha + d_a,
                         sigma_ln_t=lp.sigma_ln_t * spread, sigma_ln_alpha=lp.sigma_ln_alpha * spread)
        t_max = np.empty(n)
        alpha = np.empty(n)
        todo = np.arange(n)
        while todo.size:
            z = np.array([rngs[i].standard_normal(2) for i in todo]).reshape(-1, 2)
            t_i, a_i = correlated_profile(lp.take(todo), z[:, 0], z[:, 1])
            t_max[todo], alpha[todo] = t_i, a_i
            todo = todo[a_i <= 1.0]
        beta = (alpha - 1.0) / t_max
        t_spot, a_spot = spot_profile(t_max, alpha, front)
        b_spot = (a_spot - 1.0) / t_spot
        t_prime = tau_scale(t_max, alpha, lp.mean_ln_alpha)

        # 2. layer boundaries along the tilted axis, energy per layer
        sin_t = np.sin(theta)
        edges = cal.layer_edges_x0[None, :] / sin_t[:, None]  # (n, L+1), X0 along the axis
        frac = np.diff(gammainc(alpha[:, None], beta[:, None] * edges), axis=1)
        deposit = energy[:, None] * frac

        # 3. sampling fluctuations, per layer, from each shower's stream
        c = cal.per_layer("stochastic_term") * self.tuning.stochastic_scale
        shape = np.maximum(deposit / c**2, 1e-12)
        fluct = np.array([r.gamma(shape[i]) for i, r in enumerate(rngs)]) * c**2
        scale = self.tuning.structure_scale(len(cal.structures))[cal.layer_structure]
        visible = fluct * cal.per_layer("sampling_fraction") * scale

        # 4. spots per layer
        n_spots = number_of_spots(energy, float(cal.front.stochastic_term))
        spot_frac = np.diff(gammainc(a_spot[:, None], b_spot[:, None] * edges), axis=1)
        per_layer = np.floor(n_spots[:, None] * spot_frac).astype(np.int64)
        per_layer = np.where(visible > 0, np.maximum(per_layer, 1), 0)
        counts = per_layer.sum(axis=1)
        u = np.empty((int(counts.sum()), 4))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for r, a, b in zip(rngs, offsets[:-1], offsets[1:]):
            r.random(out=u[a:b])

        media = [Medium.of(s) for s in cal.structures]
        centre_x0 = mean_depth(energy, front) * sin_t
        jitter = (np.array([r.random(2) for r in rngs]).reshape(n, 2) - 0.5) * cal.cell_mm
        ecal = np.zeros((n, *win.shape), dtype=np.float32)
        _deposit_spots(
            per_layer, visible, u, edges, t_prime, energy, theta,
            np.interp(centre_x0, cal.layer_edges_x0, cal.layer_edges_mm), jitter,
            cal.layer_structure, np.array([m.Z for m in media]), np.array([m.inv_fs for m in media]),
            np.array([m.one_minus_ehat for m in media]), cal.per_layer("moliere_radius_mm"),
            cal.layer_edges_x0, cal.layer_edges_mm, cal.cell_mm, self.tuning.core_scale, self.tuning.tail_scale,
            ecal,
        )
        ecal[ecal < self.cell_threshold] = 0.0
        return ShowerSet(ecal, energy, theta)

    def stream(
        self,
        n: int,
        spectrum: Spectrum,
        angles: AngleRange = AngleRange(90.0, 90.0),
        *,
        seed: int = 0,
        chunk_size: int = 256,
        on_chunk: Callable[[int], None] | None = None,
        first: int = 0,
        workers: int = 1,
    ) -> Iterator[ShowerSet]:
        """Yield showers [first, first + n) in chunks; the result is identical for every chunk size and for every
        number of ``workers`` (processes simulating chunks side by side, results yielded in order)."""
        if n <= 0:
            raise InputError(f"number of showers must be positive, got {n}")
        if workers < 1:
            raise InputError(f"workers must be positive, got {workers}")
        starts = range(0, n, chunk_size)
        if workers == 1 or len(starts) == 1 or not _can_spawn():
            for start in starts:
                k = min(chunk_size, n - start)
                chunk = self.simulate(k, spectrum, angles, seed=seed, start_index=first + start)
                if on_chunk is not None:
                    on_chunk(k)
                yield chunk
            return
        ahead = 2 * workers  # chunks in flight: bounds the memory held by finished, not yet yielded chunks
        with ProcessPoolExecutor(min(workers, len(starts)), mp_context=mp.get_context("spawn"),
                                 initializer=_ignore_sigint) as pool:
            pending: deque[Future[ShowerSet]] = deque()
            try:
                for start in starts:
                    pending.append(pool.submit(self.simulate, min(chunk_size, n - start), spectrum, angles,
                                               seed=seed, start_index=first + start))
                    while len(pending) >= ahead or (pending and start == starts[-1]):
                        chunk = pending.popleft().result()
                        if on_chunk is not None:
                            on_chunk(len(chunk))
                        yield chunk
            finally:  # the caller stopped early (Ctrl-C, an error): drop the chunks not started
                for f in pending:
                    f.cancel()


def default_workers(n: int, chunk_size: int) -> int:
    """Processes for a GFlash run of ``n`` showers: one per core, but none beside the caller for a run under
    four chunks per process, where starting the processes (each imports numpy, numba and the engine) would cost
    more than it saves."""
    return max(1, min(os.cpu_count() or 1, n // (4 * chunk_size)))


def _can_spawn() -> bool:
    """Whether worker processes can start here: not in a daemon (a Dask worker may not start processes), and not
    under a main script that a spawned process cannot re-import (``python - < script``: ``__main__`` is stdin)."""
    if mp.current_process().daemon:
        return False
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.isfile(main_file)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops the run cleanly (no traceback from every process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@njit(cache=True, fastmath=True)
def _deposit_spots(
    per_layer: np.ndarray, visible: np.ndarray, u: np.ndarray, edges: np.ndarray, t_prime: np.ndarray,
    energy: np.ndarray, theta: np.ndarray, centre_mm: np.ndarray, jitter: np.ndarray,
    layer_structure: np.ndarray, z_eff: np.ndarray, inv_fs: np.ndarray, one_minus_ehat: np.ndarray,
    moliere_mm: np.ndarray, edges_x0: np.ndarray, edges_mm: np.ndarray, cell_mm: float, core_scale: float,
    tail_scale: float, out: np.ndarray,
) -> None:
    """Place every energy spot and add its energy to its cell of ``out`` (n, nx, ny, nz).

    Spot k of a shower uses the uniforms u[k]: depth inside its layer, core-or-tail choice, radius, phi.
    The axis crosses the window centre at the depth ``centre_mm``; x and y carry the entry-point jitter.
    Core and tail radii are multiplied by ``core_scale`` and ``tail_scale`` (a GFlashTuning).
    """
    n, nx, ny, _ = out.shape
    n_struct = z_eff.shape[0]
    k = 0
    for i in range(n):
        sin_t = math.sin(theta[i])
        cot = math.cos(theta[i]) / sin_t
        # radial parameters tabulated in tau (step TAU_STEP) per structure, linearly interpolated per spot
        n_tau = int(edges[i, -1] / t_prime[i] / TAU_STEP) + 2
        table = np.empty((n_struct, n_tau, 3))
        for st in range(n_struct):
            for j in range(n_tau):
                r_c, r_t, p = radial_params(energy[i], j * TAU_STEP, z_eff[st], inv_fs[st], one_minus_ehat[st])
                table[st, j, 0], table[st, j, 1], table[st, j, 2] = r_c * core_scale, r_t * tail_scale, p
        for layer in range(per_layer.shape[1]):
            m = per_layer[i, layer]
            if m == 0:
                continue
            e_spot = visible[i, layer] / m
            st = layer_structure[layer]
            lo, hi = edges[i, layer], edges[i, layer + 1]
            x0_lo, x0_hi = edges_x0[layer], edges_x0[layer + 1]
            for _ in range(m):
                t_axis = lo + u[k, 0] * (hi - lo)
                g = t_axis / t_prime[i] / TAU_STEP
                j = min(int(g), n_tau - 2)
                w = g - j
                r_c = table[st, j, 0] + w * (table[st, j + 1, 0] - table[st, j, 0])
                r_t = table[st, j, 1] + w * (table[st, j + 1, 1] - table[st, j, 1])
                p = table[st, j, 2] + w * (table[st, j + 1, 2] - table[st, j, 2])
                radius = r_c if u[k, 1] < p else r_t
                q = min(u[k, 2], 1.0 - 1e-12)
                r_mm = radius * math.sqrt(q / (1.0 - q)) * moliere_mm[layer]
                phi = 2.0 * math.pi * u[k, 3]
                z_mm = edges_mm[layer] + (t_axis * sin_t - x0_lo) / (x0_hi - x0_lo) * (
                    edges_mm[layer + 1] - edges_mm[layer]
                )
                x = jitter[i, 0] + (z_mm - centre_mm[i]) * cot + r_mm * math.cos(phi) / sin_t
                y = jitter[i, 1] + r_mm * math.sin(phi)
                ix = int(math.floor(x / cell_mm + nx / 2.0))
                iy = int(math.floor(y / cell_mm + ny / 2.0))
                if 0 <= ix < nx and 0 <= iy < ny:
                    out[i, ix, iy, layer] += e_spot
                k += 1


def simulate(
    n: int,
    energy: str | float | tuple[float, float] = 100.0,
    *,
    spectrum: str = "uniform",
    angle: str | float | tuple[float, float] = 90.0,
    window: str | Window = "25x25x25",
    seed: int = 0,
    chunk_size: int = 256,
    tuning: GFlashTuning = IDENTITY,
) -> ShowerSet:
    """Simulate ``n`` electron showers in memory (energies in GeV, angles in degrees), optionally with a
    GFlash tuning (``caloquant calibrate``)."""
    sim = ShowerSimulator(parse_window(window), tuning=tuning)
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    return ShowerSet.concatenate(list(sim.stream(n, spec, ang, seed=seed, chunk_size=chunk_size)))
