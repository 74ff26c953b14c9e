"""HDF5 shower files in the 3DGAN and CaloChallenge layouts: validated reading, chunked atomic writing.

3DGAN layout: ``ECAL`` (N, x, y, z) float32 visible energy in GeV, ``energy`` (N,) primary energy in GeV,
``theta`` (N,) incidence angle in radians. Real Geant4 (LCD) files with ``target`` (energy in column 1) and
no ``theta`` are read too (theta = pi/2, perpendicular incidence).

CaloChallenge layout: ``incident_energies`` (N, 1) MeV, ``showers`` (N, voxels) MeV, voxels flattened layer
first, i.e. ``showers.reshape(N, z, x, y)``; caloquant adds ``theta`` (N,) so tilted samples survive a round
trip (CaloChallenge readers ignore it).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from caloquant import __version__
from caloquant._atomic import OutputLock, RollbackFile, check_writable
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError
from caloquant.geometry import WINDOWS, Window, window_for_shape

LAYOUTS = ("3dgan", "calochallenge")
PERPENDICULAR = np.pi / 2
MEV_PER_GEV = 1000.0
#: Highest primary energy a shower file may hold (100 TeV); anything above is a unit error or corruption.
MAX_PRIMARY_GEV = 1e5


@dataclass
class ShowerSet:
    """Showers in memory: visible cell energies (GeV) with their primary energy (GeV) and angle (rad)."""

    ecal: np.ndarray
    energy: np.ndarray
    theta: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ecal = np.asarray(self.ecal, dtype=np.float32)
        self.energy = np.asarray(self.energy, dtype=np.float64).reshape(-1)
        self.theta = np.asarray(self.theta, dtype=np.float64).reshape(-1)
        n = self.ecal.shape[0]
        if self.ecal.ndim != 4 or self.energy.shape[0] != n or self.theta.shape[0] != n:
            raise InputError(
                f"inconsistent shower arrays: ecal {self.ecal.shape}, energy {self.energy.shape}, "
                f"theta {self.theta.shape}"
            )

    def __len__(self) -> int:
        return int(self.ecal.shape[0])

    @property
    def window(self) -> Window:
        return window_for_shape(self.ecal.shape[1:])

    def __getitem__(self, index: slice | np.ndarray) -> ShowerSet:
        return ShowerSet(self.ecal[index], self.energy[index], self.theta[index], dict(self.attrs))

    @classmethod
    def concatenate(cls, parts: list[ShowerSet]) -> ShowerSet:
        if not parts:
            raise InputError("nothing to concatenate")
        shapes = {p.ecal.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise GeometryMismatchError(f"cannot concatenate showers of different windows: {sorted(shapes)}")
        return cls(
            np.concatenate([p.ecal for p in parts]),
            np.concatenate([p.energy for p in parts]),
            np.concatenate([p.theta for p in parts]),
            dict(parts[0].attrs),
        )


def _check_values(path: Path, name: str, values: np.ndarray, *, positive: bool = False) -> None:
    """NaN, infinite, negative (or, for energies, zero) values are refused with the file and dataset named."""
    if not np.all(np.isfinite(values)):
        raise DataFormatError(f"{path}: dataset '{name}' contains NaN or infinite values")
    if positive and np.any(values <= 0):
        raise DataFormatError(f"{path}: dataset '{name}' contains zero or negative energies")
    if not positive and np.any(values < 0):
        raise DataFormatError(f"{path}: dataset '{name}' contains negative values")


def _check_physical(path: Path, showers: ShowerSet, start: int) -> None:
    """Refuse energies no calorimeter file holds: a primary above MAX_PRIMARY_GEV, or a shower whose visible
    energy exceeds its primary energy (wrong units or corrupt values)."""
    if np.any(showers.energy > MAX_PRIMARY_GEV):
        i = int(np.argmax(showers.energy))
        raise DataFormatError(f"{path}: shower {start + i} has a primary energy of {showers.energy[i]:.3g} GeV, "
                              f"above {MAX_PRIMARY_GEV:g} GeV (wrong units or corrupt values)")
    visible = showers.ecal.reshape(len(showers), -1).sum(axis=1, dtype=np.float64)
    over = np.flatnonzero(visible > showers.energy)
    if len(over):
        i = int(over[0])
        raise DataFormatError(f"{path}: shower {start + i} has {visible[i]:.3g} GeV visible for a "
                              f"{showers.energy[i]:.3g} GeV primary (wrong units or corrupt values)")


class ShowerFile:
    """An open shower file of either layout; reads chunks without loading the file whole."""

    def __init__(self, path: str | os.PathLike[str], *, check_values: bool = True) -> None:
        self.path = Path(path)
        self.check_values = check_values
        if not self.path.exists():
            raise DataFormatError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise DataFormatError(f"{self.path}: is a directory, expected an HDF5 file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError:
            raise DataFormatError(f"{self.path}: not a readable HDF5 file") from None
        try:
            self._inspect()
        except Exception:
            self._h5.close()
            raise

    def _inspect(self) -> None:
        h5, p = self._h5, self.path
        for name in ("ECAL", "energy", "target", "theta", "showers", "incident_energies"):
            if name in h5 and not isinstance(h5[name], h5py.Dataset):
                raise DataFormatError(f"{p}: '{name}' is a group, expected a dataset")
        if "ECAL" in h5:
            self.layout = "3dgan"
            ecal = h5["ECAL"]
            if ecal.ndim != 4:
                raise DataFormatError(f"{p}: 'ECAL' has shape {ecal.shape}, expected (N, x, y, z)")
            self.n = ecal.shape[0]
            self.window = self._window(ecal.shape[1:])
            if "energy" in h5:
                self._energy_key = "energy"
            elif "target" in h5:
                self._energy_key = "target"
            else:
                raise DataFormatError(f"{p}: 3DGAN layout without an 'energy' (or 'target') dataset")
        elif "showers" in h5 and "incident_energies" in h5:
            self.layout = "calochallenge"
            showers = h5["showers"]
            if showers.ndim != 2:
                raise DataFormatError(f"{p}: 'showers' has shape {showers.shape}, expected (N, voxels)")
            self.n = showers.shape[0]
            name = h5.attrs.get("window")
            if name is not None:
                if str(name) not in WINDOWS:
                    raise DataFormatError(f"{p}: unknown window attribute {name!r}")
                self.window = self._window(WINDOWS[str(name)].shape)
            else:
                matches = [w for w in WINDOWS.values() if w.n_cells == showers.shape[1]]
                if not matches:
                    raise DataFormatError(
                        f"{p}: {showers.shape[1]} voxels per shower match no known window ({', '.join(WINDOWS)})"
                    )
                self.window = matches[0]
            if showers.shape[1] != self.window.n_cells:
                raise DataFormatError(f"{p}: {showers.shape[1]} voxels do not fit window {self.window}")
            self._energy_key = "incident_energies"
        else:
            keys = ", ".join(sorted(h5.keys())) or "none"
            raise DataFormatError(
                f"{p}: missing keys: expected 'ECAL' + 'energy' (3DGAN) or 'showers' + 'incident_energies' "
                f"(CaloChallenge); found {keys}"
            )
        if self.n == 0:
            raise DataFormatError(f"{p}: file contains no showers")
        e = h5[self._energy_key]
        if e.shape[0] != self.n:
            raise DataFormatError(f"{p}: '{self._energy_key}' has {e.shape[0]} rows but there are {self.n} showers")
        if "theta" in h5 and h5["theta"].shape[0] != self.n:
            raise DataFormatError(f"{p}: 'theta' has {h5['theta'].shape[0]} rows but there are {self.n} showers")
        for name in ("ECAL" if self.layout == "3dgan" else "showers", self._energy_key, "theta"):
            if name in h5 and h5[name].dtype.kind not in "fiu":
                raise DataFormatError(f"{p}: dataset '{name}' holds {h5[name].dtype} values, expected numbers")

    def _window(self, shape: tuple[int, ...]) -> Window:
        try:
            return window_for_shape(shape)
        except InputError:
            raise DataFormatError(
                f"{self.path}: showers of shape {tuple(shape)} match no known window ({', '.join(WINDOWS)})"
            ) from None

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._h5.attrs.items()}

    def __len__(self) -> int:
        return int(self.n)

    def read(self, start: int = 0, stop: int | None = None) -> ShowerSet:
        """Showers [start, stop) as a ShowerSet in GeV and radians."""
        stop = self.n if stop is None else min(stop, self.n)
        h5 = self._h5
        if self.layout == "3dgan":
            ecal = np.asarray(h5["ECAL"][start:stop], dtype=np.float32)
            e = np.asarray(h5[self._energy_key][start:stop], dtype=np.float64)
            energy = e[:, 1] if self._energy_key == "target" and e.ndim == 2 else e.reshape(-1)
        else:
            flat = np.asarray(h5["showers"][start:stop], dtype=np.float32) / MEV_PER_GEV
            w = self.window
            ecal = flat.reshape(-1, w.nz, w.nx, w.ny).transpose(0, 2, 3, 1)
            energy = np.asarray(h5["incident_energies"][start:stop], dtype=np.float64).reshape(-1) / MEV_PER_GEV
        if "theta" in h5:
            theta = np.asarray(h5["theta"][start:stop], dtype=np.float64).reshape(-1)
        else:
            theta = np.full(stop - start, PERPENDICULAR)
        if self.check_values:
            _check_values(self.path, "ECAL" if self.layout == "3dgan" else "showers", ecal)
            _check_values(self.path, self._energy_key, energy, positive=True)
            _check_values(self.path, "theta", theta)
        showers = ShowerSet(ecal, energy, theta, self.attrs)
        if self.check_values:
            _check_physical(self.path, showers, start)
        return showers

    def iter_chunks(self, chunk_size: int = 1000) -> Iterator[ShowerSet]:
        for start in range(0, self.n, chunk_size):
            yield self.read(start, start + chunk_size)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> ShowerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShowerWriter:
    """Append ShowerSets to an HDF5 file in chunks; the file appears under its name only when closed cleanly.

    Data go to a hidden temporary sibling; ``close()`` renames it, an exception inside the ``with`` block
    deletes it, so a crash never leaves a half-written file under the final name. A failed write (full disk)
    raises one OSError naming the file, and the temporary file is removed. The output is locked while open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        window: Window,
        *,
        layout: str = "3dgan",
        attrs: Mapping[str, Any] | None = None,
        chunk_rows: int = 64,
        compression: str | None = "gzip",
        overwrite: bool = True,
    ) -> None:
        if layout not in LAYOUTS:
            raise InputError(f"unknown format {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.path = check_writable(path, overwrite=overwrite)
        self.window = window
        self.layout = layout
        self.n = 0
        self._lock = OutputLock(self.path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self._file = RollbackFile(self._tmp, "w+b")
            self._h5 = h5py.File(self._file, "w")
            self._create(attrs or {}, chunk_rows, compression)
        except BaseException as e:
            self.abort()
            raise self._failure(e) from None

    def _create(self, attrs: Mapping[str, Any], chunk_rows: int, compression: str | None) -> None:
        window, layout = self.window, self.layout
        for k, v in attrs.items():
            self._h5.attrs[k] = v
        self._h5.attrs["layout"] = layout
        self._h5.attrs["window"] = window.name
        self._h5.attrs["caloquant_version"] = __version__
        opts: dict[str, Any] = {"compression": compression, "shuffle": compression is not None}
        if compression == "gzip":
            opts["compression_opts"] = 4
        r = max(1, chunk_rows)
        if layout == "3dgan":
            self._ecal = self._h5.create_dataset(
                "ECAL", shape=(0, *window.shape), maxshape=(None, *window.shape), dtype="f4",
                chunks=(r, *window.shape), **opts,
            )
            self._energy = self._h5.create_dataset("energy", shape=(0,), maxshape=(None,), dtype="f4",
                                                   chunks=(max(r, 1024),))
        else:
            self._ecal = self._h5.create_dataset(
                "showers", shape=(0, window.n_cells), maxshape=(None, window.n_cells), dtype="f4",
                chunks=(r, window.n_cells), **opts,
            )
            self._energy = self._h5.create_dataset(
                "incident_energies", shape=(0, 1), maxshape=(None, 1), dtype="f4", chunks=(max(r, 1024), 1)
            )
        self._theta = self._h5.create_dataset("theta", shape=(0,), maxshape=(None,), dtype="f4",
                                              chunks=(max(r, 1024),))

    def _failure(self, error: BaseException) -> BaseException:
        """``error`` as one OSError naming the output when it is an I/O failure (HDF5 hides the errno)."""
        cause = getattr(getattr(self, "_file", None), "error", None) or error
        if not isinstance(cause, OSError) and not isinstance(error, RuntimeError):
            return error
        code = getattr(cause, "errno", None)
        why = os.strerror(code) if code else str(cause).splitlines()[0]
        return OSError(code or errno.EIO, f"write failed ({why})", str(self.path))

    def append(self, showers: ShowerSet) -> None:
        if showers.ecal.shape[1:] != self.window.shape:
            raise GeometryMismatchError(
                f"{self.path}: showers of shape {showers.ecal.shape[1:]} do not fit window {self.window}"
            )
        n0, n1 = self.n, self.n + len(showers)
        try:
            for ds in (self._ecal, self._energy, self._theta):
                ds.resize(n1, axis=0)
            if self.layout == "3dgan":
                self._ecal[n0:n1] = showers.ecal
                self._energy[n0:n1] = showers.energy
            else:
                self._ecal[n0:n1] = showers.ecal.transpose(0, 3, 1, 2).reshape(len(showers), -1) * MEV_PER_GEV
                self._energy[n0:n1] = showers.energy.reshape(-1, 1) * MEV_PER_GEV
            self._theta[n0:n1] = showers.theta
        except Exception as e:  # noqa: BLE001 - h5py raises OSError or RuntimeError for one failed write
            raise self._failure(e) from None
        self.n = n1

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        try:
            self._h5.flush()  # a failure here, not in close, leaves HDF5 able to close the file
            self._h5.close()
            self._file.close()
            os.replace(self._tmp, self.path)
        except Exception as e:  # noqa: BLE001 - see append
            failure = self._failure(e)
            self.abort()
            raise failure from None
        self._lock.release()
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (never raises: it runs while another error is on its way)."""
        if hasattr(self, "_h5"):
            discard_and_close(self._h5, self._file)
        elif hasattr(self, "_file"):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        self._lock.release()

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


#: File objects of HDF5 files that refused to close after a failed write: HDF5 may still call them.
_UNCLOSED: list[RollbackFile] = []


def discard_and_close(h5: h5py.File, file: RollbackFile, *, rollback: bool = False) -> None:
    """Close an HDF5 file whose writes may have failed: later writes are dropped and every error swallowed;
    ``rollback`` then returns the file to its last checkpoint.

    HDF5 recovers only if a failed flush comes before close (a failed close leaves it unusable), hence the
    flush; a file HDF5 still holds keeps its file object alive so that no callback ever meets a freed one.
    """
    file.discard()
    for step in (h5.flush, h5.close, h5.close):
        with contextlib.suppress(Exception):
            step()
    if rollback:
        file.rollback()
    if h5.id.valid:
        _UNCLOSED.append(file)
    else:
        file.close()


def write_showers(
    path: str | os.PathLike[str], showers: ShowerSet, *, layout: str = "3dgan", attrs: Mapping[str, Any] | None = None
) -> Path:
    """Write a ShowerSet to ``path`` atomically in the chosen layout."""
    with ShowerWriter(path, showers.window, layout=layout, attrs=attrs) as w:
        w.append(showers)
    return Path(path)
