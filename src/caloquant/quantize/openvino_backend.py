"""OpenVINO/NNCF backend: quantizable layers, calibration statistics collected once per calibration variant,
candidate models built from the cached statistics, per-layer times (PERF_COUNT) and throughput."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import InputError, ModelError

#: OpenVINO op types that NNCF quantizes as weighted layers.
QUANTIZABLE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                     "MatMul")
RANGES = ("minmax", "mean_minmax", "percentile", "mse")
#: Inference precision of a candidate's non-INT8 computation: the recipe word and the OpenVINO hint. Always set
#: explicitly: the CPU plugin's default is bf16 wherever the CPU has it, which FP32 candidates must never get.
FALLBACKS = {"fp32": "f32", "bf16": "bf16"}


@dataclass(frozen=True)
class Calibration:
    """One calibration variant: activation range estimator, weight granularity and bias correction."""

    range: str = "minmax"
    per_channel: bool = True
    bias_correction: bool = False

    def __post_init__(self) -> None:
        if self.range not in RANGES:
            raise InputError(f"unknown range estimator {self.range!r}; choose one of {', '.join(RANGES)}")

    @property
    def label(self) -> str:
        """Short name, e.g. 'minmax/pc' or 'percentile/pc+bc'."""
        return f"{self.range}/{'pc' if self.per_channel else 'pt'}{'+bc' if self.bias_correction else ''}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quiet_nncf() -> None:
    logging.getLogger("nncf").setLevel(logging.ERROR)
    os.environ.setdefault("NNCF_DISABLE_PROGRESS_BAR", "1")


def read_model(model: Any) -> Any:
    """An ov.Model from an ov.Model, an ONNX file or an OpenVINO IR .xml (one-line ModelError otherwise)."""
    import openvino as ov

    if isinstance(model, ov.Model):
        return model
    p = Path(model)
    if not p.exists():
        raise ModelError(f"{p}: no such model file")
    try:
        return ov.Core().read_model(str(p))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with multi-line text
        raise ModelError(f"{p}: not a readable ONNX/OpenVINO model ({str(e).splitlines()[0][:120]})") from None


def quantizable_layers(model: Any) -> list[str]:
    """Names of the weighted layers NNCF can quantize (convolutions, MatMuls), in execution order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZABLE_TYPES]


def _advanced(cal: Calibration) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimator = {"minmax": RangeEstimatorParametersSet.MINMAX, "mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
                 "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
                 "mse": RangeEstimatorParametersSet.HISTOGRAM}[cal.range]
    return AdvancedQuantizationParameters(
        disable_channel_alignment=True, disable_bias_correction=not cal.bias_correction,
        activations_range_estimator_params=estimator,
        weights_quantization_params=QuantizationParameters(per_channel=cal.per_channel),
    )


def _ptq(cal: Calibration, subset_size: int, ignored: Sequence[str]) -> Any:
    import nncf
    from nncf.quantization.algorithms.post_training.algorithm import PostTrainingQuantization

    return PostTrainingQuantization(subset_size=subset_size, fast_bias_correction=True,
                                    ignored_scope=nncf.IgnoredScope(names=list(ignored)) if ignored else None,
                                    advanced_parameters=_advanced(cal))


class Quantizer:
    """Builds INT8/FP32 mixes of one FP32 model; statistics are collected once per calibration variant and reused."""

    def __init__(self, model: Any, calibration: Sequence[np.ndarray]) -> None:
        from nncf.openvino.graph.nncf_graph_builder import GraphConverter

        _quiet_nncf()
        self.model = model
        self.layers = quantizable_layers(model)
        if not self.layers:
            raise ModelError("the model has no quantizable layer (no convolution or MatMul)")
        self.calibration = [np.ascontiguousarray(x, dtype=np.float32) for x in calibration]
        if not self.calibration:
            raise InputError("calibration data is empty")
        self.graph = GraphConverter.create_nncf_graph(model)
        self._stats: dict[Calibration, tuple[Any, Any]] = {}

    def _statistics(self, cal: Calibration) -> tuple[Any, Any]:
        import nncf
        from nncf.quantization.algorithms.pipeline import collect_statistics

        if cal not in self._stats:
            alg = _ptq(cal, len(self.calibration), ())
            points = alg.get_statistic_points(self.model, self.graph)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = collect_statistics(points, self.model, self.graph, nncf.Dataset(self.calibration))
            self._stats[cal] = (alg, stats)
        return self._stats[cal]

    def build(self, int8: Sequence[str], cal: Calibration) -> Any:
        """A new ov.Model with the layers in ``int8`` quantized (``cal`` ranges) and every other layer in FP32."""
        from nncf.openvino.quantization.quantize_model import compress_quantize_weights_transformation

        unknown = sorted(set(int8) - set(self.layers))
        if unknown:
            raise InputError(f"not quantizable layers of this model: {', '.join(unknown[:5])}")
        if not int8:
            return self.model.clone()
        full, stats = self._statistics(cal)
        alg = _ptq(cal, len(self.calibration), [n for n in self.layers if n not in int8])
        alg.get_statistic_points(self.model, self.graph)  # sets up the backend of each algorithm
        # The cached statistics are registered under the keys of the algorithms that requested them (NNCF 3.4).
        for step_old, step_new in zip(full._pipeline.pipeline_steps, alg._pipeline.pipeline_steps):
            for old, new in zip(step_old, step_new):
                new._algorithm_key = old._algorithm_key
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = alg.apply(self.model.clone(), self.graph, statistic_points=stats)
        compress_quantize_weights_transformation(q)
        return q


def native_bf16() -> bool:
    """Whether this CPU runs BF16 natively (AVX512-BF16 or AMX); elsewhere OpenVINO would only emulate it."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def set_fallback(model: Any, fallback: str) -> Any:
    """Record in the model's runtime info the precision its non-INT8 computation was judged in."""
    if fallback not in FALLBACKS:
        raise InputError(f"fallback precision must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    from caloquant.export import PRECISION_KEY

    model.set_rt_info(FALLBACKS[fallback], PRECISION_KEY)
    return model


def compile_model(model: Any, config: dict[str, Any] | None = None, fallback: str = "fp32") -> Any:
    """Compile on CPU with the non-INT8 computation in ``fallback`` precision (FP32 by default), plus ``config``."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": FALLBACKS[fallback], **(config or {})})


def batch_runner(compiled: Any, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function running any number of inputs through ``compiled`` in batches of ``batch`` (last one padded)."""
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for start in range(0, len(x), batch):
            chunk = x[start:start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            outs.append(np.array(request.infer({0: np.ascontiguousarray(chunk)})[0])[:n])
        return np.concatenate(outs)

    return run


def throughput(model: Any, example: np.ndarray, *, seconds: float = 2.0, min_runs: int = 3,
               fallback: str = "fp32") -> float:
    """Items per second of one infer request at the example's batch size (median over timed runs)."""
    request = compile_model(model, {"PERFORMANCE_HINT": "LATENCY"}, fallback).create_infer_request()
    request.infer({0: example})
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        request.infer({0: example})
        times.append(time.perf_counter() - t0)
    return float(len(example) / np.median(times))


def layer_times(model: Any, layers: Sequence[str], example: np.ndarray, *, runs: int = 3,
                precision: str = "f32") -> dict[str, float]:
    """Seconds per batch of each layer (its own node plus the FakeQuantize nodes feeding it), from PERF_COUNT."""
    feeds: dict[str, str] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            for out in op.outputs():
                for target in out.get_target_inputs():
                    consumer = target.get_node().get_friendly_name()
                    if consumer in layers:
                        feeds[op.get_friendly_name()] = consumer
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    request.infer({0: example})
    totals = dict.fromkeys(layers, 0.0)
    for _ in range(runs):
        request.infer({0: example})
        for p in request.profiling_info:
            owner = p.node_name if p.node_name in totals else feeds.get(p.node_name)
            if owner is not None:
                totals[owner] += p.real_time.total_seconds() / runs
    return totals


def output_nmse(reference: np.ndarray, approx: np.ndarray) -> float:
    """Normalised mean squared error ||ref - approx||^2 / ||ref||^2."""
    ref = np.asarray(reference, dtype=np.float64)
    den = float(np.sum(ref * ref))
    return float(np.sum((ref - np.asarray(approx, dtype=np.float64)) ** 2) / den) if den > 0 else float("nan")


def save_model(model: Any, out_xml: Path, rt_info: dict[str, str] | None = None) -> Path:
    """Save an IR (no FP16 weight compression), optionally with runtime-info entries (key path 'a/b' -> value)."""
    import openvino as ov

    from caloquant._atomic import atomic_path

    for key, value in (rt_info or {}).items():
        model.set_rt_info(value, key.split("/"))
    with atomic_path(out_xml) as tmp:
        ov.save_model(model, str(tmp.with_suffix(".xml")), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(out_xml.with_suffix(".bin"))
        tmp.with_suffix(".xml").replace(tmp)
    return out_xml
