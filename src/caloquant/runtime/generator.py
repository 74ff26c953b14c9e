"""One ``Generator`` over every engine: conditions and a seed in, physical showers (GeV, 3DGAN layout) out.

The latent noise of shower ``i`` is drawn from ``(seed, i)`` alone (``caloquant.models.shower_noise``), so
a shower does not depend on the stream count, and depends on the batch size only through float rounding.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant._atomic import sha256_file
from caloquant.data.formats import ShowerSet
from caloquant.choices import EngineName, Precision
from caloquant.errors import GeometryMismatchError, InputError, ModelError, PrecisionError
from caloquant.export.cache import bf16_padding, exported, int8_entry, is_complete
from caloquant.export.files import read_meta, read_model, read_spec
from caloquant.machine import cpu_count, isa_change_note
from caloquant.models.registry import LoadedGenerator, load_generator
from caloquant.models.spec import ModelSpec, shower_noise
from caloquant.runtime.engines import Done, Engine, OnnxRuntimeEngine, OpenVINOEngine, TorchEngine
from caloquant.runtime.precision_check import PrecisionCheck, guard, log

#: The precision words (``caloquant.choices.Precision``); anything else given as a precision is a model path.
PRECISIONS = Precision.words()
#: Batch used by ``batch="auto"``, per engine (docs/benchmarks.md, "Generation").
AUTO_BATCH = {EngineName.OPENVINO: 16, EngineName.TORCH: 16, EngineName.ONNXRUNTIME: 16}


@dataclass
class Generator:
    """A compiled generator plus the identity of the weights and precision behind it."""

    engine: Engine
    model_sha256: str
    source: str
    precision_sha256: str = ""
    check: PrecisionCheck | None = None  #: the FP32 physics check of a reduced precision (None for fp32)

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    def latent(self, energies: np.ndarray, angles_deg: np.ndarray | None, seed: int,
               indices: np.ndarray) -> np.ndarray:
        """Generator input for showers ``indices`` of the stream ``seed`` with these conditions."""
        noise = shower_noise(seed, indices, self.spec.noise_size)
        return self.spec.latent(energies, angles_deg, noise)

    def run_batches(self, latents: Iterable[np.ndarray], *, in_flight: int | None = None) -> Iterator[np.ndarray]:
        """Raw outputs of the latent batches, in order, with up to ``in_flight`` batches running at once."""
        depth = in_flight or 2 * self.engine.streams
        done: dict[int, np.ndarray | BaseException] = {}
        ready = threading.Condition()

        def finish(i: int) -> Done:
            def cb(raw: np.ndarray | BaseException) -> None:
                with ready:
                    done[i] = raw
                    ready.notify_all()
            return cb

        submitted = 0
        it = iter(latents)
        try:
            for nxt in range(1 << 62):
                while submitted - nxt < depth:
                    batch = next(it, None)
                    if batch is None:
                        break
                    self.engine.submit(batch, finish(submitted))
                    submitted += 1
                if nxt == submitted:
                    return
                with ready:
                    ready.wait_for(lambda: nxt in done)
                    raw = done.pop(nxt)
                if isinstance(raw, BaseException):
                    raise raw
                yield raw
        finally:
            self.engine.wait()

    def check_conditions(self, energies: np.ndarray, angles_deg: np.ndarray | float | None, *,
                         allow_extrapolation: bool = False) -> np.ndarray:
        """Refuse conditions the model cannot honour; returns the angles (deg) broadcast to the energies."""
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        a = np.full(len(e), 90.0) if angles_deg is None else np.broadcast_to(
            np.asarray(angles_deg, dtype=np.float64), e.shape).copy()
        if self.spec.arch == "ecal25" and np.any(np.abs(a - 90.0) > 1e-9):
            raise InputError("model ecal25 generates perpendicular showers only (--angle 90)")
        self.spec.check_conditions(e, a, allow_extrapolation=allow_extrapolation)
        return a

    def generate(self, energies: np.ndarray, angles_deg: np.ndarray | float | None = None, *, seed: int = 0,
                 indices: np.ndarray | None = None, allow_extrapolation: bool = False) -> ShowerSet:
        """Showers for these primary energies (GeV) and angles (deg); shower k uses noise (seed, indices[k])."""
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        n = len(energies)
        angles = self.check_conditions(energies, angles_deg, allow_extrapolation=allow_extrapolation)
        idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) != n:
            raise InputError(f"{len(idx)} shower indices for {n} energies")
        z = self.latent(energies, angles, seed, idx)
        b = self.engine.batch
        raw = list(self.run_batches(z[i:i + b] for i in range(0, n, b)))
        ecal = self.spec.to_physical(np.concatenate(raw), z) if raw else np.zeros((0, *self.spec.window.shape))
        return ShowerSet(ecal, energies, np.radians(angles))


def _shipped_int8(gen: LoadedGenerator) -> tuple[Path, str, str | None]:
    """The prebuilt INT8 IR of the recipe shipped with the weights, its recipe's sha256 and what to log when the
    recipe was tuned on another ISA (``caloquant.quantize.shipped_int8`` builds it)."""
    entry = int8_entry(gen)[1]
    if not is_complete(entry):
        raise ModelError(f"the INT8 model of {gen.source} is not built yet: build it from the shipped recipe with "
                         "caloquant.quantize.shipped_int8 (`caloquant generate --precision int8` does)")
    xml = entry / "model.xml"
    meta = read_meta(xml)
    return xml, str(meta["recipe_sha256"]), isa_change_note(meta.get("tuned_on"))


def _tuned_model(gen: LoadedGenerator, path: Path, engine: EngineName) -> None:
    """Check that a tuned IR/ONNX file was made from this model and fits the engine."""
    if not path.exists():
        raise ModelError(f"{path}: no such tuned model file (--precision takes fp32, bf16, int8 or a path)")
    if path.suffix not in (".xml", ".onnx"):
        raise ModelError(f"{path}: --precision PATH must be an OpenVINO .xml or an ONNX .onnx file")
    if path.suffix == ".xml" and engine != EngineName.OPENVINO:
        raise ModelError(f"{path}: an OpenVINO IR runs on --engine openvino, not {engine}")
    if engine == EngineName.TORCH:
        raise ModelError(f"{path}: an ONNX model runs on --engine onnxruntime or openvino, not torch")
    read_model(path)  # a one-line ModelError when the file is not a readable model
    spec, meta = read_spec(path)
    if meta.get("accepted") is False:
        raise ModelError(f"{path}: this model was rejected by the tuner (it failed the accuracy criterion)")
    if spec.arch != gen.spec.arch:
        raise GeometryMismatchError(f"{path}: holds a {spec.arch} model ({spec.window}), but the model is "
                                    f"{gen.spec.arch} ({gen.spec.window})")
    if not meta.get("source_sha256"):
        raise ModelError(f"{path}: records no source_sha256, so it cannot be verified against {gen.source}; "
                         "export or quantize it again with caloquant")
    if meta["source_sha256"] != gen.sha256:
        raise ModelError(f"{path}: was made from other weights (sha256 {str(meta['source_sha256'])[:12]}...) "
                         f"than {gen.source} ({gen.sha256[:12]}...)")


#: Largest inference batch (65,536 showers of 25x25x25 cells are 4 GB of output per batch).
MAX_BATCH = 65_536


def resolve_batch(batch: int | str, engine: EngineName) -> int:
    """``auto`` or a positive integer up to MAX_BATCH."""
    if batch == "auto":
        return AUTO_BATCH[engine]
    try:
        b = int(batch)
    except ValueError:
        raise InputError(f"--batch {batch!r}: use auto or a positive integer") from None
    if b < 1:
        raise InputError(f"--batch must be positive, got {b}")
    if b > MAX_BATCH:
        raise InputError(f"--batch {b} exceeds the {MAX_BATCH:,} showers one inference batch may hold")
    return b


def resolve_streams(streams: int | str) -> int | None:
    """``auto`` (None: the engine decides) or a positive integer."""
    if streams == "auto":
        return None
    try:
        k = int(streams)
    except ValueError:
        raise InputError(f"--streams {streams!r}: use auto or a positive integer") from None
    if k < 1:
        raise InputError(f"--streams must be positive, got {k}")
    return k


def open_generator(model: str | os.PathLike[str] | LoadedGenerator, *, engine: EngineName | str = EngineName.OPENVINO,
                   precision: Precision | str | os.PathLike[str] = Precision.FP32, batch: int | str = "auto",
                   streams: int | str = "auto", fallback_fp32: bool = False, check: bool = True) -> Generator:
    """Load a model (shipped name or checkpoint) and compile it on an engine at a precision.

    ``precision`` is fp32, bf16 (OpenVINO hint; emulated on CPUs without native BF16), int8 (the INT8 IR of the
    shipped tuner recipe, prebuilt by ``caloquant.quantize.shipped_int8``) or the path of a tuned OpenVINO
    ``.xml`` / QDQ ``.onnx`` made from the same weights.
    ``streams``: ``auto`` lets OpenVINO's throughput hint choose; torch and ONNX Runtime use 1 by default.
    Any precision but fp32 is checked against FP32 once per machine (``runtime.precision_check``): a
    deviation raises PrecisionError, or with ``fallback_fp32`` logs it and compiles FP32 instead.
    ``check=False`` skips that check: only for deliberate comparisons with a model known to be off (the
    full-INT8 baseline that demo and bench judge next to the tuned model), never for production files.
    """
    gen = model if isinstance(model, LoadedGenerator) else load_generator(model)
    word = str(precision)
    engine = EngineName.parse(engine, "engine")
    k = resolve_streams(streams)
    b = resolve_batch(batch, engine)
    precision_sha, note, padded = "", None, []
    if word not in PRECISIONS:
        compiled = Path(word)
        _tuned_model(gen, compiled, engine)
        precision_sha = sha256_file(compiled)
    elif engine == EngineName.TORCH:
        return Generator(TorchEngine(gen.module, gen.spec, batch=b, streams=k or 1, precision=word),
                         gen.sha256, gen.source)
    elif engine == EngineName.ONNXRUNTIME:
        if word != Precision.FP32:
            raise InputError(f"engine onnxruntime runs fp32 or a QDQ .onnx path, not {word!r}")
        compiled = exported(gen, ".onnx")
    elif word == Precision.INT8:
        compiled, precision_sha, note = _shipped_int8(gen)
    else:
        padded = bf16_padding(gen) if word == Precision.BF16 else []
        if padded:
            log.warning("caloquant: BF16 kernels wrong for %s on this CPU; exporting with zero-padded input channels "
                        "(the same function through another kernel)", ", ".join(padded))
        compiled = exported(gen, ".xml", padded)
    if engine == EngineName.OPENVINO:
        eng: Engine = OpenVINOEngine(compiled, gen.spec, batch=b, streams=k, precision=word)
    else:
        eng = OnnxRuntimeEngine(compiled, gen.spec, batch=b, streams=k or 1, precision=word)
    out = Generator(eng, gen.sha256, gen.source, precision_sha)
    if word == Precision.FP32 or not check:
        return out
    identity = {"model_sha256": gen.sha256, "spec": gen.spec.digest(),
                "precision": word if word in PRECISIONS else "file", "precision_sha256": precision_sha,
                "engine": engine, "batch": b,
                **({"padded_convs": padded} if padded else {})}
    try:
        out.check = guard(out, lambda: Generator(TorchEngine(gen.module, gen.spec, batch=b), gen.sha256, gen.source),
                          identity, note=note)
    except PrecisionError as e:
        if not fallback_fp32:
            raise
        log.warning("caloquant: %s; falling back to fp32 as asked (--fallback-fp32)", str(e).split(": refusing")[0])
        return open_generator(gen, engine=engine, precision=Precision.FP32, batch=b, streams=streams)
    return out


def describe(gen: Generator) -> dict[str, Any]:
    """Engine, precision, batch and streams of a compiled generator (for logs and file attributes)."""
    e = gen.engine
    return {"engine": e.name, "precision": e.precision, "batch": e.batch, "streams": e.streams,
            "cores": cpu_count(), "model_sha256": gen.model_sha256, "precision_sha256": gen.precision_sha256,
            "precision_check": gen.check.describe() if gen.check else "fp32 (reference)"}
