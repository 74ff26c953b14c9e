"""Inference engines behind one protocol: PyTorch eager (reference), OpenVINO and ONNX Runtime.

An engine maps latent vectors (B, latent_size) to raw generator output (B, x, y, z) in the training
representation. Every engine works on batches of exactly ``batch`` rows (a short last batch is padded with
zeros and the padding dropped), so a shower's result depends on the batch size and precision only, never
on how many streams run or in which order batches complete.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from caloquant._optional import require
from caloquant.choices import EngineName
from caloquant.errors import InputError, ModelError, reason
from caloquant.export.files import PRECISION_HINTS, inference_hint
from caloquant.machine import cpu_count
from caloquant.models.registry import centred
from caloquant.models.spec import ModelSpec

#: The engines' names (``caloquant.choices.EngineName``).
ENGINES = EngineName.words()

#: Completion callback: the raw output of a batch, or the exception that stopped it.
Done = Callable[[np.ndarray | BaseException], None]


class Engine(Protocol):
    """A compiled generator: synchronous and asynchronous inference on fixed-size batches."""

    name: str
    precision: str
    spec: ModelSpec
    batch: int
    streams: int

    def infer(self, latent: np.ndarray) -> np.ndarray:
        """Raw output of up to ``batch`` latent rows, synchronously."""
        ...

    def submit(self, latent: np.ndarray, done: Done) -> None:
        """Start inference of up to ``batch`` rows; ``done(raw or error)`` is called when finished (any thread)."""
        ...

    def wait(self) -> None:
        """Block until every submitted batch has called its ``done``."""
        ...


#: Byte alignment of engine inputs: a cache line and an AVX-512 vector. oneDNN's and MKL's reproducibility
#: conditions include aligned buffers, and numpy aligns to 16 bytes only, so a batch could otherwise meet
#: differently peeled kernels from one allocation to the next.
ALIGN = 64


def pad_batch(latent: np.ndarray, batch: int) -> np.ndarray:
    """Latent rows padded with zero rows up to ``batch`` (engines run fixed batch shapes), in an aligned buffer."""
    n = latent.shape[0]
    if n > batch:
        raise InputError(f"{n} rows do not fit a batch of {batch}")
    size = batch * latent.shape[1]
    raw = np.zeros(size + ALIGN // 4, dtype=np.float32)
    first = (-raw.ctypes.data % ALIGN) // 4
    out = raw[first:first + size].reshape(batch, latent.shape[1])
    out[:n] = latent
    return out


class _ThreadedEngine(ABC):
    """Asynchronous ``submit`` for engines with a thread-safe synchronous ``infer`` (torch, ONNX Runtime)."""

    name: str
    streams: int

    def _start_pool(self, initializer: Callable[[], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix=f"caloquant-{self.name}",
                                        initializer=initializer)
        self._pending: list[Future[None]] = []

    @abstractmethod
    def infer(self, latent: np.ndarray) -> np.ndarray:
        """Raw output of up to ``batch`` rows."""

    def _run(self, latent: np.ndarray, done: Done) -> None:
        try:
            raw: np.ndarray | BaseException = self.infer(latent)
        except Exception as e:  # noqa: BLE001 - handed to the caller through done()
            raw = e
        done(raw)

    def submit(self, latent: np.ndarray, done: Done) -> None:
        """Start inference of one batch on the next free stream (a worker thread)."""
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._run, latent, done))

    def wait(self) -> None:
        """Block until every submitted batch is done."""
        for fut in self._pending:
            fut.result()
        self._pending = []


class TorchEngine(_ThreadedEngine):
    """PyTorch eager in FP32: the reference every other engine is compared to."""

    name = EngineName.TORCH.value

    def __init__(self, module: Any, spec: ModelSpec, *, batch: int, streams: int = 1, precision: str = "fp32") -> None:
        torch = require("torch")
        if precision != "fp32":
            raise InputError(f"engine torch runs fp32 only, not {precision!r} (use --engine openvino)")
        # as exported graphs do, it stops before the entry-point shift: decoding shifts (ModelSpec.to_physical)
        self.module, self.spec, self.batch, self.streams, self.precision = (centred(module).eval(), spec, batch,
                                                                            streams, precision)
        if streams > 1:
            torch.set_num_threads(max(1, cpu_count() // streams))
        threads = torch.get_num_threads()
        # OpenMP's thread count is per calling thread: a new worker thread would run its first forward pass with
        # the OpenMP default (every core), split the reductions differently and give other low bits than every
        # later batch (seen on an AVX-512 FP16 Xeon), so each worker takes the caller's count before its first batch.
        self._start_pool(initializer=lambda: torch.set_num_threads(threads))

    def infer(self, latent: np.ndarray) -> np.ndarray:
        """Raw output of up to ``batch`` rows (padded to ``batch``)."""
        torch = require("torch")
        n = latent.shape[0]
        with torch.inference_mode():
            return self.module(torch.from_numpy(pad_batch(latent, self.batch))).numpy()[:n]


class OnnxRuntimeEngine(_ThreadedEngine):
    """ONNX Runtime CPU session: FP32 export or a QDQ-quantized ``.onnx``; streams are concurrent ``run`` calls."""

    name = EngineName.ONNXRUNTIME.value

    def __init__(self, onnx_path: Path, spec: ModelSpec, *, batch: int, streams: int = 1,
                 precision: str = "fp32") -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, cpu_count() // streams)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it ({reason(e)})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.spec, self.batch, self.streams, self.precision = spec, batch, streams, precision
        self._start_pool()

    def infer(self, latent: np.ndarray) -> np.ndarray:
        """Raw output of up to ``batch`` rows (padded to ``batch``)."""
        n = latent.shape[0]
        return self.session.run(None, {self.input_name: pad_batch(latent, self.batch)})[0][:n]


class OpenVINOEngine:
    """OpenVINO CPU with a static batch shape and an AsyncInferQueue of one request per stream."""

    name = EngineName.OPENVINO.value

    def __init__(self, model_xml: Path, spec: ModelSpec, *, batch: int, streams: int | None = None,
                 precision: str = "fp32") -> None:
        ov = require("openvino")
        self._core = core = ov.Core()  # kept alive with the compiled model and its frontend libraries
        try:
            model = core.read_model(str(model_xml))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with long multi-line text
            raise ModelError(f"{model_xml}: OpenVINO cannot read it ({reason(e)})") from None
        model.reshape({model.inputs[0].any_name: [batch, spec.latent_size]})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
        # a quantized IR runs in the precision the tuner judged it in (f32 unless its rt_info says bf16)
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS.get(precision) or inference_hint(model)
        if streams is not None:
            config["NUM_STREAMS"] = streams
        self.compiled = core.compile_model(model, "CPU", config)
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        jobs = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.spec, self.batch, self.precision = spec, batch, precision
        self._queue = ov.AsyncInferQueue(self.compiled, max(jobs, self.streams))
        self._queue.set_callback(self._callback)

    @staticmethod
    def _callback(request: Any, userdata: tuple[int, Done]) -> None:
        n, done = userdata
        try:
            raw: np.ndarray | BaseException = request.get_output_tensor(0).data[:n].copy()
        except Exception as e:  # noqa: BLE001 - OpenVINO threads must not raise; handed over through done()
            raw = e
        done(raw)

    def infer(self, latent: np.ndarray) -> np.ndarray:
        """Raw output of up to ``batch`` rows (padded to ``batch``), synchronously."""
        out: list[np.ndarray | BaseException] = []
        self.submit(latent, out.append)
        self.wait()
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def submit(self, latent: np.ndarray, done: Done) -> None:
        """Start one batch on the next idle infer request (blocks while all streams are busy)."""
        self._queue.start_async({0: pad_batch(latent, self.batch)}, (latent.shape[0], done))

    def wait(self) -> None:
        """Block until every submitted batch is done."""
        self._queue.wait_all()
