"""Resumable output: ``OUT.h5.partial`` holds whole showers 0..k-1 in index order, committed chunk by chunk.

Protocol: a chunk is appended, then the attribute ``showers_committed`` is set to the new row count and the
file is flushed. On resume the datasets are cut back to ``showers_committed`` (a chunk written but not
committed is dropped) and generation continues at that shower index with the same seed; since noise and
conditions depend on (seed, index) only, the result equals an uninterrupted run (the recomputed rows up to
the engine's run-to-run rounding where its kernels are not bit-reproducible). The run's identity (model
and precision sha256, engine, seed, energies, angles, batch, N, layout) is stored as attributes and must
match. When the last chunk is committed the file is renamed to ``OUT.h5``.

SIGINT, SIGTERM, a full disk and ordinary errors return the file to its last commit (``RollbackFile``).
A hard kill (SIGKILL, power loss) in the middle of an HDF5 write can leave the partial file unreadable;
resuming then says so and one starts again. The final output is locked (``OutputLock``) for the whole run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloquant._atomic import RollbackFile
from caloquant.data.formats import ShowerWriter, discard_and_close
from caloquant.errors import DataFormatError, InputError
from caloquant.geometry import Window

COMMITTED = "showers_committed"
#: Attributes that define a run: a resumed run must agree on all of them (the stream count is free).
IDENTITY = ("model_sha256", "precision", "precision_sha256", "engine", "batch", "seed", "n", "first_index",
            "energy_gev", "spectrum", "angle_deg", "layout", "window")
_DATASETS = {"3dgan": ("ECAL", "energy", "theta"), "calochallenge": ("showers", "incident_energies", "theta")}


def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where a run into ``out`` keeps its committed showers until it completes."""
    p = Path(out)
    return p.with_name(p.name + ".partial")


def identity_mismatch(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first identity attribute on which a stored run and a requested run differ, described; else None."""
    for key in IDENTITY:
        a, b = stored.get(key), wanted.get(key)
        if str(a) != str(b):
            return f"{key} is {a} in the interrupted run, {b} now"
    return None


class PartialShowerFile(ShowerWriter):
    """A ShowerWriter on ``OUT.h5.partial`` that commits chunks, survives interruption and can be reopened.

    The file is opened through a ``RollbackFile``: when a write fails (full disk), ``abort`` returns it
    byte for byte to its last commit, so the committed showers stay resumable and no row is half written.
    """

    def __init__(self, out: str | os.PathLike[str], window: Window, *, layout: str, attrs: Mapping[str, Any],
                 chunk_rows: int, resume: bool) -> None:
        self.final = Path(out)
        part = partial_path(out)
        if part.exists() and not resume:
            raise InputError(f"{part} holds an interrupted run: pass --resume to continue it, or delete it")
        if not part.exists():
            ShowerWriter(part, window, layout=layout, attrs={**attrs, COMMITTED: 0}, chunk_rows=chunk_rows).close()
        self.path, self.window, self.layout = part, window, layout
        self._file = RollbackFile(part, "r+b")
        try:
            self._h5 = h5py.File(self._file, "r+")
        except OSError:
            self._file.close()
            raise DataFormatError(f"{part}: the interrupted run's file is damaged and cannot be resumed; "
                                  "delete it and start again") from None
        try:
            self._reopen(attrs)
        except BaseException:
            self._h5.close()
            self._file.close()
            raise

    def _reopen(self, attrs: Mapping[str, Any]) -> None:
        h5 = self._h5
        stored = dict(h5.attrs)
        if COMMITTED not in stored or any(name not in h5 for name in _DATASETS.get(self.layout, ())):
            raise DataFormatError(f"{self.path}: not a caloquant generate partial file; delete it and start again")
        why = identity_mismatch(stored, attrs)
        if why:
            raise InputError(f"{self.path}: cannot resume a different run ({why}); delete it or use the same options")
        self._ecal, self._energy, self._theta = (h5[name] for name in _DATASETS[self.layout])
        self.n = _intact_rows(self._energy, int(stored[COMMITTED]), int(stored["batch"]))
        for ds in (self._ecal, self._energy, self._theta):
            if ds.shape[0] != self.n:  # a chunk written but not committed
                ds.resize(self.n, axis=0)
        self.commit()

    def commit(self) -> None:
        """Record every appended row as committed and flush them to disk."""
        try:
            self._h5.attrs[COMMITTED] = self.n
            self._h5.flush()
        except Exception as e:  # noqa: BLE001 - h5py raises OSError or RuntimeError for one failed write
            raise self._failure(e) from None
        self._file.checkpoint()
        self.committed = self.n

    def close(self) -> Path:
        """Commit, close and move the completed file to its final name."""
        self.commit()
        self._h5.close()
        self._file.close()
        os.replace(self.path, self.final)
        return self.final

    def abort(self) -> None:
        """Close, keeping exactly the committed showers for ``--resume`` (later writes are rolled back)."""
        discard_and_close(self._h5, self._file, rollback=True)


def _intact_rows(energy: h5py.Dataset, committed: int, batch: int) -> int:
    """Committed rows up to the first one never written (zero energy: a write lost by an older version or a
    hard kill), cut back to whole batches so that the resumed run batches alike."""
    e = np.asarray(energy[:committed], dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(e) & (e > 0)))
    return committed if len(bad) == 0 else int(bad[0]) - int(bad[0]) % max(batch, 1)
