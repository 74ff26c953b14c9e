"""OpenVINO/NNCF backend: quantizable layers, calibration statistics collected once per calibration variant,
candidate models built from the cached statistics, per-layer times (PERF_COUNT) and throughput."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloquant._optional import require
from caloquant.choices import Fallback
from caloquant.errors import InputError, ModelError, reason
from caloquant.export.files import PRECISION_HINTS
from caloquant.runtime.throughput import median_seconds

#: OpenVINO op types that NNCF quantizes as weighted layers.
QUANTIZABLE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                     "MatMul")
RANGES = ("minmax", "mean_minmax", "percentile", "mse")
#: NNCF releases [low, high) whose private internals the cached-statistics builds use (PostTrainingQuantization.
#: _pipeline, the algorithms' _algorithm_key, PatternsManager's pattern getters, find_subgraphs_matching_pattern);
#: pinned in pyproject.toml. Any other NNCF gets a fresh calibration per build through its public API.
NNCF_INTERNALS = ((3, 4), (3, 5))


#: How a layer's input activations are scaled for INT8: one range per tensor (NNCF's), or per sample
#: (``scale_inputs_per_sample``).
SCALES = ("tensor", "sample")


@dataclass(frozen=True)
class Calibration:
    """One calibration variant: activation range estimator, weight granularity, bias correction, and whether
    each layer's input is first divided by its own per-sample maximum (``scale`` sample)."""

    range: str = "minmax"
    per_channel: bool = True
    bias_correction: bool = False
    scale: str = "tensor"

    def __post_init__(self) -> None:
        if self.range not in RANGES:
            raise InputError(f"unknown range estimator {self.range!r}; choose one of {', '.join(RANGES)}")
        if self.scale not in SCALES:
            raise InputError(f"unknown activation scale {self.scale!r}; choose one of {', '.join(SCALES)}")

    @property
    def label(self) -> str:
        """Short name, e.g. 'minmax/pc', 'percentile/pc+bc' or 'minmax/pc/sample'."""
        return (f"{self.range}/{'pc' if self.per_channel else 'pt'}{'+bc' if self.bias_correction else ''}"
                f"{'/sample' if self.scale == 'sample' else ''}")

    def to_dict(self) -> dict[str, Any]:
        """Its fields; ``scale`` only when per sample, so recipes of one range per tensor read as before."""
        d = asdict(self)
        return d if self.scale != "tensor" else {k: v for k, v in d.items() if k != "scale"}


def nncf_internals_known() -> bool:
    """Whether the installed NNCF is a release whose private internals the cached-statistics builds were made for."""
    try:
        version = tuple(int(p) for p in require("nncf").__version__.split(".")[:2])
    except ValueError:
        return False
    return NNCF_INTERNALS[0] <= version < NNCF_INTERNALS[1]


def _quiet_nncf() -> None:
    logging.getLogger("nncf").setLevel(logging.ERROR)
    os.environ.setdefault("NNCF_DISABLE_PROGRESS_BAR", "1")


def quantizable_layers(model: Any) -> list[str]:
    """Names of the weighted layers NNCF can quantize (convolutions, MatMuls), in execution order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZABLE_TYPES]


def _advanced(cal: Calibration) -> Any:
    params = require("nncf.quantization.advanced_parameters")
    RangeEstimatorParametersSet = require("nncf.quantization.range_estimator").RangeEstimatorParametersSet
    estimator = {"minmax": RangeEstimatorParametersSet.MINMAX, "mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
                 "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
                 "mse": RangeEstimatorParametersSet.HISTOGRAM}[cal.range]
    return params.AdvancedQuantizationParameters(
        disable_channel_alignment=True, disable_bias_correction=not cal.bias_correction,
        activations_range_estimator_params=estimator,
        weights_quantization_params=params.QuantizationParameters(per_channel=cal.per_channel),
    )


def _scope(ignored: Sequence[str]) -> Any:
    return require("nncf").IgnoredScope(names=list(ignored)) if ignored else None


def _ptq(cal: Calibration, subset_size: int, ignored: Sequence[str]) -> Any:
    ptq = require("nncf.quantization.algorithms.post_training.algorithm").PostTrainingQuantization
    return ptq(subset_size=subset_size, fast_bias_correction=True,
                                    ignored_scope=_scope(ignored), advanced_parameters=_advanced(cal))


#: Ops that only move values: a layer's input quantizer may sit before them.
_LAYOUT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")
#: Ops a quantized input may pass through on its way to a layer (weight decompression, layout changes).
_PASS_THROUGH = ("Convert", "Multiply", "Subtract", *_LAYOUT)
#: Why a layer that NNCF leaves in floating point is skipped (no quantizer placed; integer inputs).
NO_QUANTIZER = "NNCF places no quantizer on its inputs (a pattern it keeps in floating point)"
INTEGER = "integer inputs (INT8 quantization applies to floating-point layers)"


def _real_inputs(model: Any, name: str) -> bool:
    """Whether every input of the layer ``name`` is floating point."""
    op = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)
    return all(i.get_element_type().is_real() for i in op.inputs())


def as_input(x: Any) -> np.ndarray:
    """A contiguous model input: floating point as float32, integers (e.g. token ids) kept as they are."""
    a = np.asarray(x)
    return np.ascontiguousarray(a if a.dtype.kind in "iub" else a.astype(np.float32, copy=False))


def _quantized_input(node: Any, depth: int = 6) -> bool:
    """Whether ``node`` is, or is fed through pass-through ops by, a FakeQuantize or an INT8 weight constant."""
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return node.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
    return depth > 0 and kind in _PASS_THROUGH and any(
        _quantized_input(i.get_source_output().get_node(), depth - 1) for i in node.inputs())


def int8_layers(model: Any) -> set[str]:
    """Names of the quantizable layers of a built model with at least one quantized input."""
    return {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZABLE_TYPES
            and any(_quantized_input(i.get_source_output().get_node()) for i in op.inputs())}


@contextmanager
def _memoized_patterns(cache: dict[Any, Any]) -> Iterator[None]:
    """NNCF's hardware/ignored pattern graphs and their matches on this model's graphs, computed once.

    They depend on the model graph only, never on the ignored scope, yet take most of a build (NNCF 3.4
    rebuilds the patterns and runs subgraph isomorphism for every quantizer setup).
    """
    graph_module: Any = require("nncf.common.graph.graph")
    ip_module: Any = require("nncf.common.insertion_point_graph")
    PatternsManager = require("nncf.common.graph.patterns.manager").PatternsManager

    match, hw, ignored = ip_module.find_subgraphs_matching_pattern, PatternsManager.__dict__[
        "get_full_hw_pattern_graph"], PatternsManager.__dict__["get_full_ignored_pattern_graph"]

    def patterns(original: Any) -> Any:
        def get(**kwargs: Any) -> Any:
            key = (original, tuple(sorted(kwargs.items())))
            if key not in cache:
                cache[key] = original.__func__(**kwargs)
            return cache[key]
        return staticmethod(get)

    def matched(graph: Any, pattern: Any, strict: bool = True) -> Any:
        key = (id(pattern), strict, frozenset(graph.nodes), frozenset(graph.edges))
        if key not in cache:
            cache[key] = match(graph, pattern, strict)
        return cache[key]

    ip_module.find_subgraphs_matching_pattern = graph_module.find_subgraphs_matching_pattern = matched
    PatternsManager.get_full_hw_pattern_graph, PatternsManager.get_full_ignored_pattern_graph = (
        patterns(hw), patterns(ignored))
    try:
        yield
    finally:
        ip_module.find_subgraphs_matching_pattern = graph_module.find_subgraphs_matching_pattern = match
        PatternsManager.get_full_hw_pattern_graph, PatternsManager.get_full_ignored_pattern_graph = hw, ignored


def scale_inputs_per_sample(model: Any) -> Any:
    """A copy of ``model`` in which every layer computes ``layer(x / s) * s``, s the per-sample maximum of |x| (a
    layer is linear in its activation input; biases are separate ops in OpenVINO models): the same function in
    FP32, while an INT8 build quantizes x / s, whose range is [-1, 1] for every sample.

    With one range per tensor a generator's activations, which scale with the primary energy over a 50x range,
    are resolved coarsely at low energies: on the shipped ecal25 (2026-12-06, docs/quantization.md) full INT8 put
    the lowest-energy showers' visible energy 70 % high; per-sample scaled, 0.9 % low. Layers whose activation
    input has another rank than their output, or is a constant, are left as they are; names are kept."""
    ops = require("openvino.opset13")
    m = model.clone()
    for op in m.get_ordered_ops():
        if op.get_type_name() not in QUANTIZABLE_TYPES:
            continue
        x = op.input(0).get_source_output()
        shape = x.get_partial_shape()
        if (x.get_node().get_type_name() == "Constant" or not x.get_element_type().is_real() or shape.rank.is_dynamic
                or shape.rank.get_length() < 2 or op.get_output_partial_shape(0).rank != shape.rank):
            continue
        name, consumers = op.get_friendly_name(), list(op.output(0).get_target_inputs())
        absmax = ops.reduce_max(ops.abs(x), np.arange(1, shape.rank.get_length()), keep_dims=True)
        scale = ops.maximum(absmax, np.array(1e-30, dtype=np.float32))
        scaled = ops.divide(x, scale)
        op.input(0).replace_source_output(scaled.output(0))
        rescaled = ops.multiply(op.output(0), scale)
        for node, role in ((absmax, "absmax"), (scale, "scale"), (scaled, "scaled"), (rescaled, "rescaled")):
            node.set_friendly_name(f"{name}/per_sample/{role}")
        for c in consumers:
            c.replace_source_output(rescaled.output(0))
    m.validate_nodes_and_infer_types()
    return m


def _fed_ops(node: Any, depth: int = 6) -> list[Any]:
    """The ops a FakeQuantize ``node`` feeds, looking through layout changes."""
    out = []
    for t in node.output(0).get_target_inputs():
        op = t.get_node()
        out += _fed_ops(op, depth - 1) if depth > 0 and op.get_type_name() in _LAYOUT else [op]
    return out


def _other_quantized_ops(model: Any) -> list[str]:
    """Names of the ops other than layers whose inputs NNCF quantized in ``model`` (OpenVINO's CPU configuration
    quantizes Interpolate inputs, for one), in execution order."""
    names = {op.get_friendly_name() for fq in model.get_ordered_ops() if fq.get_type_name() == "FakeQuantize"
             for op in _fed_ops(fq) if op.get_type_name() not in QUANTIZABLE_TYPES}
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_friendly_name() in names]


@dataclass
class _View:
    """One form of the model the Quantizer builds from (plain, or per-sample scaled), with its NNCF graph and the
    non-layer ops NNCF would quantize in it."""

    model: Any
    graph: Any
    unlisted: list[str]
    full: Any = None  #: the build with every layer in INT8 and nothing else kept out


class Quantizer:
    """Builds INT8/FP32 mixes of one FP32 model from calibration statistics collected once per statistic point.

    ``layers`` are the layers candidates choose from; ``skipped`` maps every other convolution/MatMul to why it
    cannot be quantized. ``fresh`` counts the builds that fell back to a fresh NNCF calibration. ``unlisted``: the
    other ops NNCF would quantize (the ecal25 generator's Resize ops); they stay in floating point in every build,
    so a candidate quantizes exactly its layers (with them, "the dense layer alone in INT8" also quantized both
    upsamplings, which cost 2-3 % of the low-energy showers' visible energy on its own). A calibration with
    ``scale`` sample builds from ``scale_inputs_per_sample(model)``; the FP32 build is always the model itself.
    """

    def __init__(self, model: Any, calibration: Sequence[np.ndarray]) -> None:
        _quiet_nncf()
        self.model = model
        found = quantizable_layers(model)
        if not found:
            raise ModelError("the model has no quantizable layer (no convolution or MatMul)")
        self.calibration = [as_input(x) for x in calibration]
        if not self.calibration:
            raise InputError("calibration data is empty")
        self._stats: dict[Calibration, dict[tuple[Any, ...], Any]] = {}
        self._patterns: dict[Any, Any] = {}
        self._views: dict[str, _View] = {}
        self.fresh = 0
        self.layers = found
        self.skipped: dict[str, str] = {}
        placed = int8_layers(self._view("tensor").full)
        self.skipped = {n: NO_QUANTIZER if _real_inputs(model, n) else INTEGER for n in found if n not in placed}
        self.layers = [n for n in found if n in placed]
        if not self.layers:
            raise ModelError(f"no layer of the model can be quantized: {NO_QUANTIZER}")

    @property
    def unlisted(self) -> list[str]:
        """The non-layer ops NNCF would quantize in the plain model, kept in floating point."""
        return self._view("tensor").unlisted

    def _view(self, scale: str) -> _View:
        """The model form of activation scale ``scale``, made (with one full build to find its unlisted ops) once."""
        if scale not in self._views:
            GraphConverter = require("nncf.openvino.graph.nncf_graph_builder").GraphConverter
            model = self.model if scale == "tensor" else scale_inputs_per_sample(self.model)
            view = self._views[scale] = _View(model, GraphConverter.create_nncf_graph(model), [])
            view.full = self._build(view, quantizable_layers(self.model), Calibration(scale=scale))
            view.unlisted = _other_quantized_ops(view.full)
        return self._views[scale]

    def build(self, int8: Sequence[str], cal: Calibration) -> Any:
        """A new ov.Model with the layers in ``int8`` quantized (``cal`` ranges and scale) and every other layer in
        FP32."""
        unknown = sorted(set(int8) - set(self.layers))
        if unknown:
            raise InputError(f"not quantizable layers of this model: {', '.join(unknown[:5])}")
        if not int8:
            return self.model.clone()
        return self._build(self._view(cal.scale), int8, cal)

    def _build(self, view: _View, int8: Sequence[str], cal: Calibration) -> Any:
        ignored = [n for n in quantizable_layers(view.model) if n not in int8] + view.unlisted
        if nncf_internals_known():
            try:
                with _memoized_patterns(self._patterns):
                    return self._cached(view, ignored, cal)
            except Exception as e:  # noqa: BLE001 - NNCF internals: any failure means "calibrate afresh"
                logging.getLogger(__name__).info("cached statistics failed (%s); calibrating afresh", e)
        self.fresh += 1
        return self._fresh(view, ignored, cal)

    def _cached(self, view: _View, ignored: Sequence[str], cal: Calibration) -> Any:
        """PTQ applied with cached statistics; points no earlier build needed are collected now (NNCF 3.4)."""
        nncf = require("nncf")
        points = require("nncf.common.tensor_statistics.statistic_point")
        StatisticPoint, StatisticPointsContainer = points.StatisticPoint, points.StatisticPointsContainer
        compress = require("nncf.openvino.quantization.quantize_model").compress_quantize_weights_transformation
        collect_statistics = require("nncf.quantization.algorithms.pipeline").collect_statistics

        alg = _ptq(cal, len(self.calibration), ignored)
        steps = alg._pipeline.pipeline_steps
        if len(steps) != 1:
            raise RuntimeError(f"a PTQ pipeline of {len(steps)} steps needs statistics of intermediate models")
        roles = {a._algorithm_key: f"{i}/{type(a).__name__}" for i, a in enumerate(steps[0])}
        cache = self._stats.setdefault(cal, {})
        wanted = []  # (cache key, target point, algorithm key, collector) of every statistic the build needs
        for points in alg.get_statistic_points(view.model, view.graph).values():
            for point in points:
                for algo, collectors in point.algorithm_to_tensor_collectors.items():
                    wanted += [((roles[algo], point.target_point, frozenset(c.aggregators)), point.target_point,
                                algo, c) for c in collectors]
        missing = {key: (tp, algo, c) for key, tp, algo, c in wanted if key not in cache}
        if missing:
            todo = StatisticPointsContainer()
            for tp, algo, c in missing.values():
                todo.add_statistic_point(StatisticPoint(tp, c, algo))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                collect_statistics(todo, view.model, view.graph, nncf.Dataset(self.calibration))
            cache.update({key: c for key, (_, _, c) in missing.items()})
        stats = StatisticPointsContainer()
        for key, tp, algo, _ in wanted:
            stats.add_statistic_point(StatisticPoint(tp, cache[key], algo))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = alg.apply(view.model.clone(), view.graph, statistic_points=stats)
        compress(q)
        return q

    def _fresh(self, view: _View, ignored: Sequence[str], cal: Calibration) -> Any:
        """PTQ through NNCF's supported API, calibrating afresh (one-line ModelError when NNCF fails)."""
        nncf = require("nncf")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return nncf.quantize(view.model, nncf.Dataset(self.calibration), subset_size=len(self.calibration),
                                     fast_bias_correction=True,
                                     ignored_scope=_scope(ignored), advanced_parameters=_advanced(cal))
        except Exception as e:  # noqa: BLE001 - NNCF raises many types, often with multi-line text
            raise ModelError(f"NNCF cannot quantize this model ({type(e).__name__}: "
                             f"{reason(e)})") from None


def native_bf16() -> bool:
    """Whether this CPU runs BF16 natively (AVX512-BF16 or AMX); elsewhere OpenVINO would only emulate it."""
    return "BF16" in require("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_model(model: Any, config: dict[str, Any] | None = None, fallback: Fallback = Fallback.FP32) -> Any:
    """Compile on CPU with the non-INT8 computation in ``fallback`` precision (FP32 by default), plus ``config``."""
    config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[fallback], **(config or {})}
    return require("openvino").Core().compile_model(model, "CPU", config)


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
               fallback: Fallback = Fallback.FP32) -> float:
    """Items per second of one infer request at the example's batch size (median over timed runs)."""
    request = compile_model(model, {"PERFORMANCE_HINT": "LATENCY"}, fallback).create_infer_request()
    return len(example) / median_seconds(lambda: request.infer({0: example}), seconds=seconds, min_runs=min_runs)


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
    config = {"INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    compiled = require("openvino").Core().compile_model(model, "CPU", config)
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
