"""Serve many small generation requests: pack them into full batches across streams, answer with futures."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from caloquant.data.formats import ShowerSet
from caloquant.errors import InputError
from caloquant.generate.packing import Packer, Slice
from caloquant.runtime.generator import Generator


@dataclass
class _Request:
    latent: np.ndarray
    energies: np.ndarray
    theta: np.ndarray
    raw: np.ndarray
    missing: int
    future: Future[ShowerSet]


class RequestBatcher:
    """Queue requests of any size; full batches start at once on the engine's streams, ``flush`` runs the rest.

    A request's showers use noise ``(seed, indices)`` like ``Generator.generate``; they equal a direct call
    within float rounding (a shower's batch neighbours change the kernel blocking, not its inputs).
    """

    def __init__(self, generator: Generator, *, allow_extrapolation: bool = False) -> None:
        self.generator = generator
        self.allow_extrapolation = allow_extrapolation
        self._packer = Packer(generator.engine.batch)
        self._requests: dict[int, _Request] = {}
        self._next_id = 0
        self._lock = threading.Lock()

    def submit(self, energies: np.ndarray, angles_deg: np.ndarray | float | None = None, *, seed: int = 0,
               indices: np.ndarray | None = None) -> Future[ShowerSet]:
        """Queue one request; the future resolves once all its showers are generated (call ``flush`` to force)."""
        gen = self.generator
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        a = gen.check_conditions(e, angles_deg, allow_extrapolation=self.allow_extrapolation)
        idx = np.arange(len(e), dtype=np.int64) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if len(idx) != len(e):
            raise InputError(f"{len(idx)} shower indices for {len(e)} energies")
        fut: Future[ShowerSet] = Future()
        req = _Request(gen.latent(e, a, seed, idx), e, np.radians(a),
                       np.empty((len(e), *gen.spec.window.shape), dtype=np.float32), len(e), fut)
        if len(e) == 0:
            fut.set_result(ShowerSet(req.raw, e, req.theta))
            return fut
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            self._requests[rid] = req
            full = self._packer.add(rid, len(e))
        for batch in full:
            self._start(batch)
        return fut

    def flush(self) -> None:
        """Start the partly filled batch (padded) and wait until every queued request is answered."""
        with self._lock:
            last = self._packer.flush()
        if last:
            self._start(last)
        self.generator.engine.wait()

    def _start(self, batch: list[Slice]) -> None:
        latent = np.concatenate([self._requests[s.request].latent[s.start:s.stop] for s in batch])
        self.generator.engine.submit(latent, lambda raw: self._scatter(batch, raw, latent))

    def _scatter(self, batch: list[Slice], raw: np.ndarray | BaseException, latent: np.ndarray) -> None:
        rows = np.cumsum([0] + [len(s) for s in batch])
        for s, row in zip(batch, rows):
            with self._lock:
                req = self._requests.get(s.request)
                if req is not None and isinstance(raw, BaseException):
                    del self._requests[s.request]
            if req is None:  # the request already failed in another batch
                continue
            if isinstance(raw, BaseException):
                req.future.set_exception(raw)
                continue
            req.raw[s.start:s.stop] = self.generator.spec.to_physical(raw[row:row + len(s)],
                                                                      latent[row:row + len(s)])
            with self._lock:
                req.missing -= len(s)
                finished = req.missing == 0
                if finished:
                    del self._requests[s.request]
            if finished:
                req.future.set_result(ShowerSet(req.raw, req.energies, req.theta))
