"""Orchestration of the accuracy-driven tuner: baselines, per-layer latency and sensitivity, the search, budget
and history. Every evaluated candidate is judged by the paired-bootstrap upper bound of its degradation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from caloquant.choices import Fallback
from caloquant.errors import CaloquantError, InputError, ModelError
from caloquant.export.files import read_model, set_inference_precision
from caloquant.quantize import search
from caloquant.quantize.evaluators import Evaluator, Vetoing
from caloquant.quantize.openvino_backend import (
    Calibration,
    Quantizer,
    as_input,
    batch_runner,
    compile_model,
    layer_times,
    native_bf16,
    output_nmse,
    throughput,
)
from caloquant.quantize.search import Criterion, LayerCost
from caloquant.validate.metrics import bootstrap_counts

#: Plain min/max ranges, per-channel weights, no bias correction: the TFLite-style full-INT8 baseline.
BASELINE_CALIBRATION = Calibration("minmax", True, False)
#: Further calibration variants, tried when full INT8 fails or to save a layer from fallback; per-sample activation
#: scaling first (a generator's activations scale with the primary energy: docs/quantization.md).
VARIANTS = (Calibration("minmax", True, False, "sample"), Calibration("percentile", True, True),
            Calibration("mse", True, True), Calibration("minmax", True, True))


@dataclass
class Candidate:
    """One evaluated configuration: what it is, its metric with errors, its verdict and speed."""

    index: int
    kind: str
    int8: list[str]
    calibration: dict[str, Any]
    metric: float
    metric_error: float
    degradation: float
    degradation_error: float
    upper95: float
    passed: bool
    throughput: float
    latency_ms: float
    details: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    fallback: Fallback = Fallback.FP32  #: precision of every non-INT8 op (bf16 where the CPU runs it natively)
    vetoed: str = ""  #: why the evaluator refused it outright (e.g. the runtime physics guard), whatever its metric

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the fallback as its word)."""
        return asdict(self) | {"fallback": str(self.fallback)}


@dataclass
class LayerReport:
    """Measured per-layer figures: times per batch (s) in each precision, INT8 gain, sensitivity, output error."""

    name: str
    t_fp32: float
    t_int8: float
    t_bf16: float
    gain: float
    sensitivity: float = float("nan")
    sensitivity_measured: bool = False
    nmse: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TuneResult:
    """Outcome of a tuning run; ``model`` is the accepted ov.Model (the best failing one if none passed)."""

    model: Any
    best: Candidate
    accepted: bool
    history: list[Candidate]
    layers: list[LayerReport]
    criterion: Criterion
    metric_name: str
    baseline_metric: float
    noise_floor: float
    allowed: float
    objective: str
    batch: int
    minutes: float
    stop_reason: str
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  #: layers left in floating point, with the reason
    fresh_calibrations: int = 0  #: builds where cached statistics failed and NNCF calibrated afresh

    @property
    def fp32(self) -> Candidate:
        return self.history[0]

    @property
    def full_int8(self) -> Candidate:
        return self.history[1]

    @property
    def speedup_vs_fp32(self) -> float:
        """Throughput of the best candidate over OpenVINO FP32's."""
        return self.best.throughput / self.fp32.throughput

    def verdict(self) -> dict[str, Any]:
        """What a recipe records of the tuning: metric, criterion, baselines, verdict, speed-up, chosen candidate."""
        return {"metric": self.metric_name, "criterion": self.criterion.describe(),
                "baseline_metric": self.baseline_metric, "noise_floor": self.noise_floor, "accepted": self.accepted,
                "speedup_vs_fp32": self.speedup_vs_fp32, "candidate": self.best.to_dict()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready history and figures (without models and outputs)."""
        return {
            "metric": self.metric_name, "criterion": self.criterion.describe(),
            "tolerance": self.criterion.tolerance, "relative": self.criterion.relative,
            "higher_is_better": self.criterion.higher_is_better,
            "baseline_metric": self.baseline_metric, "noise_floor": self.noise_floor, "allowed": self.allowed,
            "objective": self.objective, "batch": self.batch, "minutes": self.minutes,
            "stop_reason": self.stop_reason, "accepted": self.accepted, "best": self.best.index,
            "speedup_vs_fp32": self.speedup_vs_fp32,
            "speedup_vs_full_int8": self.best.throughput / self.full_int8.throughput,
            "candidates": [c.to_dict() for c in self.history], "layers": [r.to_dict() for r in self.layers],
            "pareto": search.pareto_front([c.throughput for c in self.history],
                                          [c.degradation for c in self.history]),
            "skipped": self.skipped, "fresh_calibrations": self.fresh_calibrations,
        }


class AccuracyNotReachedError(CaloquantError):
    """No quantization candidate met the accuracy criterion; ``result`` is the tuning run, closest candidate first.

    A ``CaloquantError``: the CLI reports it in one line with exit code 2 (OUTDIR is still written).
    """

    def __init__(self, message: str, result: TuneResult) -> None:
        super().__init__(message)
        self.result = result


class _Run:
    """State of one tuning run (budget, cached baselines, history)."""

    def __init__(self, quantizer: Quantizer, evaluator: Evaluator, criterion: Criterion, batch: int,
                 max_candidates: int, max_minutes: float, n_boot: int, seconds: float,
                 log: Callable[[str], None]) -> None:
        self.q, self.ev, self.criterion, self.batch = quantizer, evaluator, criterion, batch
        self.max_candidates, self.deadline = max_candidates, time.perf_counter() + 60.0 * max_minutes
        self.n_boot, self.seconds, self.log = n_boot, seconds, log
        first = quantizer.calibration[0]
        self.example = as_input(np.resize(first, (batch, *first.shape[1:])))
        self.history: list[Candidate] = []
        self.outputs: dict[int, Any] = {}
        self.weights: np.ndarray | None = None
        self.base_reps = np.empty(0)
        self.base_value = float("nan")
        self.base_veto: Any = None  #: the FP32 baseline's veto outputs, when the evaluator vetoes
        self.reserved = 0  #: candidates kept back, once one passes, for the final BF16-fallback trial

    def seen(self, int8: Sequence[str], cal: Calibration, fallback: Fallback = Fallback.FP32) -> bool:
        """Whether this configuration was evaluated already (never spend a candidate twice)."""
        return any(set(c.int8) == set(int8) and Calibration(**c.calibration) == cal and c.fallback == fallback
                   for c in self.history)

    def budget_left(self) -> bool:
        keep = self.reserved if _best(self.history) is not None else 0
        return len(self.history) < self.max_candidates - keep and time.perf_counter() < self.deadline

    def evaluate(self, int8: Sequence[str], cal: Calibration, kind: str,
                 fallback: Fallback = Fallback.FP32) -> Candidate:
        t0 = time.perf_counter()
        model = self.q.build(list(int8), cal)
        runner = batch_runner(compile_model(model, fallback=fallback), self.batch)
        outputs = self.ev.outputs(runner)
        value = float(self.ev.metric(outputs)[0])
        vetoed = ""
        if isinstance(self.ev, Vetoing):
            mine = self.ev.veto_outputs(runner)
            if not self.history:
                self.base_veto = mine
            else:
                vetoed = self.ev.veto(mine, self.base_veto) or ""
        if not np.isfinite(value) and not self.history:  # later candidates fail on it (broken kernels)
            raise InputError(f"the evaluator returned {value} for the {kind} candidate; it must return finite values")
        if self.weights is None:
            self.weights = bootstrap_counts(self.ev.n_items(outputs), self.n_boot, np.random.default_rng(0))
        reps = np.asarray(self.ev.metric(outputs, self.weights), dtype=float)
        if not self.history:
            self.base_value, self.base_reps = value, reps
        deg = self.criterion.degradation(self.base_value, value)
        if self.criterion.higher_is_better:
            err, upper = search.paired_bound(reps, self.base_reps, deg)
        else:
            err, upper = search.paired_bound(self.base_reps, reps, deg)
        if not self.history:
            err, upper = 0.0, 0.0
        speed = throughput(model, self.example, seconds=self.seconds, fallback=fallback)
        cand = Candidate(len(self.history), kind, sorted(int8, key=self.q.layers.index), cal.to_dict(), value,
                         float(np.std(reps[np.isfinite(reps)], ddof=1)), deg, err, upper,
                         not vetoed and self.criterion.passes(upper, self.base_value) if self.history else True,
                         speed, 1000.0 * self.batch / speed, self.ev.details(outputs), time.perf_counter() - t0,
                         fallback, vetoed)
        self.history.append(cand)
        self.outputs[cand.index] = outputs
        self.log(f"[{cand.index:2d}] {kind:<13} {cal.label:<16} int8 {len(int8)}/{len(self.q.layers)} "
                 f"else {fallback}  "
                 f"{self.ev.name} {value:.4g}  degradation {deg:+.3g} (95% UB {upper:+.3g})  "
                 f"{'PASS' if cand.passed else 'fail'}  {speed:.1f} items/s"
                 + (f"  vetoed: {vetoed}" if vetoed else ""))
        return cand


def _best(history: Sequence[Candidate]) -> Candidate | None:
    passing = [c for c in history[1:] if c.passed]
    return max(passing, key=lambda c: c.throughput) if passing else None


#: Largest batch of the throughput objective (the timed input is allocated whole).
MAX_TUNE_BATCH = 65_536


def check_options(batch: int, max_candidates: int, max_minutes: float) -> None:
    """One-line InputError, naming the option, for a batch, candidate count or time budget the tuner cannot use
    (checked before any data is loaded or simulated)."""
    if batch < 1:
        raise InputError(f"--batch must be >= 1 item, got {batch}")
    if batch > MAX_TUNE_BATCH:
        raise InputError(f"--batch {batch} exceeds the {MAX_TUNE_BATCH:,} items one timed batch may hold")
    if max_candidates < 2:
        raise InputError(f"--max-candidates must be >= 2 (the FP32 and full-INT8 baselines), got {max_candidates}")
    if not max_minutes > 0 or max_minutes == float("inf"):
        raise InputError(f"--max-minutes must be a positive number, got {max_minutes}")


def tune(model: Any, calibration: Sequence[np.ndarray], evaluator: Evaluator, *, criterion: Criterion | None = None,
         batch: int = 128, objective: str = "throughput", max_candidates: int = 12, max_minutes: float = 10.0,
         n_boot: int = 200, variants: Sequence[Calibration] = VARIANTS, timing_seconds: float = 2.0,
         bf16: bool | None = None, bf16_wrong: Sequence[str] = (),
         log: Callable[[str], None] = lambda _: None) -> TuneResult:
    """Find the fastest INT8/BF16/FP32 mix of ``model`` (ov.Model, ONNX or IR path) that passes ``criterion``.

    ``bf16``: also try the best passing INT8 set with its non-INT8 computation in BF16 (default: when the CPU
    runs BF16 natively and the measured per-layer BF16 times beat FP32 on the fallback layers), unless the set
    leaves out of INT8 a layer of ``bf16_wrong`` (layers this CPU's BF16 kernels compute wrong).

    Raises AccuracyNotReachedError (carrying this result as ``.result``) when no candidate passes.
    """
    criterion = criterion or Criterion(higher_is_better=evaluator.higher_is_better)
    if objective not in ("throughput", "latency"):
        raise InputError(f"objective must be 'throughput' or 'latency', got {objective!r}")
    check_options(batch, max_candidates, max_minutes)
    start = time.perf_counter()
    q = Quantizer(read_model(model), calibration)
    for n, why in q.skipped.items():
        log(f"skipped {n}: {why}")
    run = _Run(q, evaluator, criterion, batch, max_candidates, max_minutes, n_boot, timing_seconds, log)
    layers = q.layers
    fp32 = run.evaluate([], BASELINE_CALIBRATION, "fp32")
    allowed = criterion.allowed(fp32.metric)
    full = run.evaluate(layers, BASELINE_CALIBRATION, "full-int8")

    t_fp32 = layer_times(q.model, layers, run.example)
    t_bf16 = layer_times(q.model, layers, run.example, precision="bf16")
    t_int8 = layer_times(q.build(layers, BASELINE_CALIBRATION), layers, run.example)
    reports = {n: LayerReport(n, t_fp32[n], t_int8[n], t_bf16[n], t_fp32[n] - t_int8[n]) for n in layers}

    # Calibration: keep the variant whose full-INT8 model degrades least.
    cal, ref = BASELINE_CALIBRATION, full
    for v in variants:
        if ref.passed or not run.budget_left():
            break
        c = run.evaluate(layers, v, "variant")
        if c.upper95 < ref.upper95:
            cal, ref = v, c

    # Output error of each layer quantized alone (cheap: one calibration batch, not a metric evaluation), when
    # budget is left for a search that uses it.
    # A vetoing evaluator also screens each layer alone (its veto inputs only, no metric evaluation): a layer that
    # the veto refuses even on its own cannot be in any accepted set, so the search leaves it out.
    x = q.calibration[0]
    y_fp32 = batch_runner(compile_model(q.model), batch)(x)
    unsafe: dict[str, str] = {}
    for n in layers if run.budget_left() else ():
        try:
            runner = batch_runner(compile_model(q.build([n], cal)), batch)
            reports[n].nmse = output_nmse(y_fp32, runner(x))
        except ModelError as e:  # NNCF cannot build this layer alone, even calibrating afresh
            log(f"{n}: no single-layer build ({e}); its sensitivity is taken as full INT8's degradation")
            continue
        if isinstance(evaluator, Vetoing):
            refusal = evaluator.veto(evaluator.veto_outputs(runner), run.base_veto)
            if refusal:
                unsafe[n] = refusal
                log(f"{n}: kept out of the search, vetoed alone in INT8: {refusal}")
    searched = [n for n in layers if n not in unsafe]

    try_bf16 = native_bf16() if bf16 is None else bf16
    if not try_bf16:
        log("BF16 fallback not tried: " + ("disabled" if bf16 is False else "this CPU has no native BF16"))
    run.reserved = int(try_bf16)
    stop = "full INT8 passes and no layer is slower in INT8"
    if not searched:
        stop = "every layer is vetoed alone in INT8"
    elif not (ref.passed and all(r.gain >= 0 for r in reports.values())):
        stop = _search(run, searched, reports, cal, ref, allowed, variants)
    run.reserved = 0
    if try_bf16:
        _bf16_fallback(run, reports, forced=bf16 is True, wrong=bf16_wrong)
    best = _best(run.history)
    accepted = best is not None
    if best is None:
        best = min(run.history[1:], key=lambda c: c.upper95)
    elif fp32.throughput >= best.throughput:  # the fastest model that passes is the unquantized one
        log(f"no passing INT8 mix beats FP32 on this machine ({best.throughput:.1f} vs {fp32.throughput:.1f} "
            "items/s): FP32 kept")
        best, stop = fp32, f"{stop}; FP32 kept: no passing INT8 mix is faster"
    final = set_inference_precision(q.build(best.int8, Calibration(**best.calibration)), best.fallback)
    result = TuneResult(final, best, accepted, run.history, [reports[n] for n in layers], criterion,
                        evaluator.name, fp32.metric, fp32.metric_error, allowed, objective, batch,
                        (time.perf_counter() - start) / 60.0, stop,
                        {"fp32": run.outputs[0], "full-int8": run.outputs[1], "tuned": run.outputs[best.index]},
                        dict(q.skipped), q.fresh)
    if not accepted:
        raise AccuracyNotReachedError(
            f"no candidate met the criterion ({criterion.describe()}, allowed {allowed:.4g}); closest: candidate "
            f"{best.index} ({best.kind}, {len(best.int8)}/{len(layers)} layers INT8) with degradation "
            f"{best.degradation:.4g}, 95% upper bound {best.upper95:.4g}", result)
    return result


def _bf16_fallback(run: _Run, reports: dict[str, LayerReport], *, forced: bool, wrong: Sequence[str] = ()) -> None:
    """Try the best passing INT8 set with every non-INT8 op in BF16, when the measured layer times say it pays
    and no layer it leaves out of INT8 is one this CPU computes wrong in BF16 (``wrong``).

    OpenVINO's CPU plugin takes one inference precision per compiled model, so BF16 covers the FP32 fallback
    layers and the ops between layers (batch norms, activations, upsampling) together.
    """
    best = _best(run.history)
    if best is None or not run.budget_left():
        return
    broken = [n for n in wrong if n not in best.int8]
    if broken:
        run.log(f"BF16 fallback not tried: this CPU's BF16 kernel is wrong for {', '.join(broken)}, which the best "
                "set keeps out of INT8")
        return
    fallback = [r for n, r in reports.items() if n not in best.int8]
    saving = sum(r.t_fp32 - r.t_bf16 for r in fallback)
    if forced or (fallback and saving > 0):
        run.evaluate(best.int8, Calibration(**best.calibration), "bf16-fallback", fallback=Fallback.BF16)
    else:
        run.log(f"BF16 fallback not tried: the {len(fallback)} FP32 layers would save {1e3 * saving:.2f} ms/batch")


def _search(run: _Run, layers: list[str], reports: dict[str, LayerReport], cal: Calibration, ref: Candidate,
            allowed: float, variants: Sequence[Calibration]) -> str:
    """Sensitivity probes, then knapsack-like choice of INT8 sets; returns why it stopped."""
    probe_budget = max(0, run.max_candidates - len(run.history) - 2)
    order = sorted(layers, key=lambda n: -reports[n].nmse)
    for n in order[:probe_budget]:
        if not run.budget_left():
            break
        c = run.evaluate([m for m in layers if m != n], Calibration(**ref.calibration), "probe")
        reports[n].sensitivity, reports[n].sensitivity_measured = ref.degradation - c.degradation, True
    measured = [r for r in reports.values() if r.sensitivity_measured]
    scale = (sum(r.sensitivity for r in measured) / sum(r.nmse for r in measured)
             if measured and sum(r.nmse for r in measured) > 0 else 0.0)
    for r in reports.values():
        if not r.sensitivity_measured:
            r.sensitivity = scale * r.nmse if np.isfinite(r.nmse) else ref.degradation
    costs = [LayerCost(n, reports[n].gain, reports[n].sensitivity) for n in layers]
    tried = {frozenset(c.int8) for c in run.history if Calibration(**c.calibration) == cal}
    margin = max(ref.upper95 - ref.degradation, 0.0)
    while True:
        if not run.budget_left():
            return "budget exhausted"
        chosen, kind = search.choose(costs, ref.degradation, allowed, margin=margin, exclude=tried), "search"
        best = _best(run.history)
        if chosen is None and best is None:  # nothing predicted to pass yet: revert the most sensitive layers
            chosen, kind = search.greedy_revert(costs, exclude=tried), "greedy"
        if chosen is None or (best is not None and search.predicted_gain(chosen, costs)
                              <= search.predicted_gain(best.int8, costs)):
            break
        tried.add(chosen)
        c = run.evaluate(sorted(chosen), cal, kind)
        if not c.passed and kind == "search":
            margin = max(margin, c.upper95 - search.predicted_degradation(chosen, costs, ref.degradation))
    # Calibration variants where they can save the fastest fallback layer of the best candidate.
    best = _best(run.history)
    if best is None:
        return "no untried set is predicted to pass"
    fallback = sorted(set(layers) - set(best.int8), key=lambda n: -reports[n].gain)
    if not fallback or reports[fallback[0]].gain <= 0:
        return "best passing candidate can no longer improve"
    for v in (BASELINE_CALIBRATION, *variants):
        if v == cal or run.seen([*best.int8, fallback[0]], v):
            continue
        if not run.budget_left():
            return "budget exhausted"
        run.evaluate([*best.int8, fallback[0]], v, "rescue")
    return "best passing candidate can no longer improve"
