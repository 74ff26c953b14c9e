"""``caloquant bench``: every deployment of one generator and the reference MC side by side, measured in one run.

Speed and peak memory of each row come from a process of its own (``caloquant.bench.worker``); the physics
metric of every row is the tuner's (3DGAN moments against an independent reference-MC sample, lower is
better) on identical conditions and noise, with a bootstrap error that includes the reference's statistics. The
reference MC (its row and the metric's reference) is GFlash with the tuning the model learned (its card's).
A row that cannot be measured is kept with the reason and no figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.bench import deployments
from caloquant.bench.worker import LARGE_BATCH
from caloquant.errors import CaloquantError, InputError, Interrupted, ModelError, SimulationError
from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
from caloquant.machine import cpu_count, describe_machine
from caloquant.models.card import tuning_name
from caloquant.models.registry import LoadedGenerator, load_generator
from caloquant.models.spec import ModelSpec
from caloquant.quantize.evaluators import PhysicsEvaluator
from caloquant.quantize.shipped import shipped_int8
from caloquant.quantize.source import ResolvedModel, resolve
from caloquant.runtime import open_generator
from caloquant.simulate import geant4, load_tuning, simulate
from caloquant.simulate.engine import Spectrum
from caloquant.validate import compute_features
from caloquant.validate.metrics import bootstrap_counts

#: Row keys in table order, with their display names.
ROWS = {
    "pytorch-fp32": "PyTorch FP32",
    "openvino-fp32": "OpenVINO FP32",
    "openvino-bf16": "OpenVINO BF16",
    "full-int8": "full INT8 (TFLite-style)",
    "tuned": "tuned mixed precision",
    "nncf-ac": "NNCF accuracy control",
    "mc": "reference MC",
    "geant4": "Geant4 (full simulation)",
}
#: Energies at which the Geant4 row is timed: midpoints of this many equal slices of the model's spectrum (the
#: mean CPU time per shower over the spectrum, by the midpoint rule), with this many showers each.
GEANT4_POINTS, GEANT4_SHOWERS = 3, 2
#: Least CPU time per shower and GeV (ms) a Geant4 timing may show: full simulation takes about 6 ms per GeV on
#: the benchmark machines (docs/benchmarks.md); a figure under this is a timing error, refused rather than printed.
GEANT4_MIN_MS_PER_GEV = 0.1


@dataclass
class BenchSettings:
    """How long and on how many showers each row is measured."""

    seconds: float = 3.0
    n_showers: int = DEFAULT_EVALUATION.n_showers
    n_reference: int = DEFAULT_EVALUATION.n_reference
    n_boot: int = 200
    seed: int = DEFAULT_EVALUATION.seed + 1  #: the table judges every model on showers none was tuned on
    rows: tuple[str, ...] = tuple(ROWS)

    @property
    def evaluation(self) -> EvaluationSettings:
        """The physics evaluator's settings of the table."""
        return EvaluationSettings(self.n_showers, self.n_reference, self.seed, LARGE_BATCH)

    def check(self) -> None:
        """One-line InputError for values the benchmark cannot use."""
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise InputError(f"unknown bench rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
        if not 0 < self.seconds < float("inf"):
            raise InputError(f"--seconds must be a positive finite number, got {self.seconds}")
        self.evaluation.check()
        if self.n_boot < 10:
            raise InputError(f"bootstrap replicates must be at least 10, got {self.n_boot}")


@dataclass
class Row:
    """One line of the table; figures are None where the row was not measured (``missing`` says why)."""

    key: str
    name: str
    engine: str
    precision: str
    ms_per_shower_b1: float | None = None
    ms_per_shower_b128: float | None = None
    showers_per_s_single: float | None = None
    showers_per_s_multistream: float | None = None
    streams: int | None = None
    peak_rss_mb: float | None = None
    model_mb: float | None = None
    metric: float | None = None
    metric_error: float | None = None
    speedup_vs_pytorch_fp32: float | None = None
    speedup_vs_mc: float | None = None
    speedup_vs_geant4: float | None = None
    missing: str | None = None


@dataclass
class BenchResult:
    """The table with the machine it was measured on and the settings."""

    model: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    created: str
    rows: list[Row] = field(default_factory=list)

    def row(self, key: str) -> Row | None:
        """The row with this key, if the table has it."""
        return next((r for r in self.rows if r.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON document: {"model", "created", "machine", "settings", "rows": [...]}."""
        return {"model": self.model, "created": self.created, "machine": self.machine, "settings": self.settings,
                "rows": [asdict(r) for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


@dataclass
class _Plan:
    """What a row runs: an engine and precision word or model path, and its model size."""

    row: Row
    precision_arg: str = ""
    model_mb: float | None = None


def _score(ev: Any, outputs: Any, s: BenchSettings) -> tuple[float, float]:
    """Metric and its bootstrap error (showers and reference resampled)."""
    weights = bootstrap_counts(ev.n_items(outputs), s.n_boot, np.random.default_rng([s.seed, 5]))
    reps = np.asarray(ev.metric(outputs, weights), dtype=float)
    return float(ev.metric(outputs)[0]), float(np.nanstd(reps, ddof=1))


def _generator_physics(gen: Any, engine: str, precision: str, ev: Any, s: BenchSettings) -> tuple[float, float]:
    # bench judges every row's physics itself (the baselines are there because they are off): no FP32 guard
    g = open_generator(gen, engine=engine, precision=precision, batch=LARGE_BATCH, streams=1, check=False)

    def infer(z: np.ndarray) -> np.ndarray:
        return np.concatenate(list(g.run_batches(z[i:i + LARGE_BATCH] for i in range(0, len(z), LARGE_BATCH))))

    return _score(ev, ev.outputs(infer), s)


def _mc_physics(spec: Any, ev: Any, s: BenchSettings, tuning: str = "none") -> tuple[float, float]:
    mc = simulate(s.n_showers, spec.energy_range, window=spec.window, seed=s.seed + 2000, tuning=load_tuning(tuning))
    return _score(ev, compute_features(mc), s)


def check_geant4_rate(rate: float, energy_gev: float) -> None:
    """SimulationError unless ``rate`` (Geant4 showers per CPU-second at ``energy_gev``) is a plausible figure."""
    if not (np.isfinite(rate) and rate > 0) or 1000.0 / (rate * energy_gev) < GEANT4_MIN_MS_PER_GEV:
        raise SimulationError(f"implausible Geant4 timing: {rate:.3g} showers per CPU-second at {energy_gev:g} GeV "
                              f"(under {GEANT4_MIN_MS_PER_GEV:g} ms per GeV); not reported")


def geant4_core_rate(spec: ModelSpec) -> float:
    """Geant4 showers per CPU-second of one worker over the model's energy spectrum (uniform: the midpoint rule on
    GEANT4_POINTS slices, GEANT4_SHOWERS showers each; worker set-up excluded)."""
    low, high = spec.energy_range
    spectrum = Spectrum(low, high)
    seconds = 0.0
    for k in range(GEANT4_POINTS):
        e = spectrum.sample((k + 0.5) / GEANT4_POINTS)
        rate = geant4.core_rate(spec.window, Spectrum(e, e), GEANT4_SHOWERS, seed=k)
        check_geant4_rate(rate, e)
        seconds += GEANT4_SHOWERS / rate
    return GEANT4_POINTS * GEANT4_SHOWERS / seconds


def _timings(config: dict[str, Any]) -> dict[str, Any]:
    """Run the worker in a fresh process; CaloquantError with its last error line when it fails."""
    proc = subprocess.run([sys.executable, "-m", "caloquant.bench.worker", json.dumps(config)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise CaloquantError(f"measurement failed: {lines[-1][:200] if lines else f'exit {proc.returncode}'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Rows whose model file may be given (else it is built in the run).
GIVEN_ROWS = ("full-int8", "tuned", "nncf-ac")


def _check_given(gen: LoadedGenerator, path: Path, key: str) -> None:
    """A given IR must exist and come from the same weights (one-line error before anything is measured)."""
    if key not in GIVEN_ROWS:
        raise InputError(f"a model file can be given for the rows {', '.join(GIVEN_ROWS)}, not {key!r}")
    if not path.exists():
        raise InputError(f"{path}: no such model file (row {key})")
    open_generator(gen, engine="openvino", precision=str(path), batch=1, streams=1, check=False)


def _built(key: str, src: ResolvedModel, workdir: Path) -> Path:
    """Build the IR of an INT8 row: full INT8, the shipped tuned recipe (cached), or the NNCF accuracy-control peer."""
    if key == "full-int8":
        return deployments.build_full_int8(src, workdir / "full_int8.xml")
    if key == "tuned":
        return shipped_int8(src)
    return deployments.build_nncf_accuracy_control(src, workdir / "nncf_ac.xml")


def _plans(src: ResolvedModel, gen: LoadedGenerator, given: dict[str, Path], workdir: Path,
           rows: tuple[str, ...]) -> list[_Plan]:
    """Build or locate the model file of every requested row; rows whose model cannot be had get ``missing``."""
    plans = []
    for key in rows:
        engine = key if key in ("mc", "geant4") else ("torch" if key == "pytorch-fp32" else "openvino")
        plan = _Plan(Row(key, ROWS[key], engine, "fp32"))
        try:
            if key == "pytorch-fp32":
                plan.model_mb = deployments.files_mib(deployments.save_weights(gen, workdir / "pytorch_fp32.pt"))
                plan.precision_arg = "fp32"
            elif key in ("openvino-fp32", "openvino-bf16"):
                plan.precision_arg = str(src.path) if key == "openvino-fp32" else "bf16"
                plan.row.precision = key.split("-")[1]
                plan.model_mb = deployments.ir_mib(src.path)
            elif key == "mc":
                plan.row.precision = "fp64"
            elif key == "geant4":
                plan.row.precision = "fp64"
                if not geant4.available():
                    plan.row.missing = "geant4-pybind is not installed: pip install 'caloquant[geant4]'"
            else:
                plan.row.precision = "int8" if key == "full-int8" else "int8/fp32"
                xml = given.get(key) or _built(key, src, workdir)
                plan.precision_arg, plan.model_mb = str(xml), deployments.ir_mib(xml)
        except Interrupted:  # Ctrl-C / SIGTERM stop the bench (130/143), never a row
            raise
        except (CaloquantError, ImportError) as e:
            plan.row.missing = str(e)
        plans.append(plan)
    return plans


def run_bench(model: str | os.PathLike[str] | ResolvedModel, *,
              given: Mapping[str, str | os.PathLike[str]] | None = None, settings: BenchSettings | None = None,
              workdir: str | os.PathLike[str] | None = None, say: Callable[[str], None] = lambda _: None,
              tuning: str | None = None) -> BenchResult:
    """Measure every row of the table for ``model`` (shipped name, checkpoint, or a model resolved already) in this
    run; the weights are loaded and exported once.

    ``given`` maps the rows full-int8, tuned and nncf-ac to IR files of the same weights; rows not given are
    built here (tuned: from the recipe shipped with the model, else the row is missing). The reference MC is GFlash
    with the tuning of the model's card, or ``tuning`` (``none`` or a shipped name) when given.
    """
    s = settings or BenchSettings()
    s.check()
    override = None if tuning is None else tuning_name(tuning, "--tuning")
    if isinstance(model, ResolvedModel):
        resolved, name, gen = model, model.name, model.generator
        if gen is None:
            raise ModelError(f"{name}: bench measures caloquant generators (a shipped name or a checkpoint)")
    else:
        resolved, name, gen = None, str(model), load_generator(model)
    paths = {k: Path(v) for k, v in (given or {}).items()}
    for key, path in paths.items():
        _check_given(gen, path, key)
    src = resolved or resolve(gen)
    if override is not None:
        src = replace(src, tuning=override)
    cores = cpu_count()
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="caloquant-bench-", dir=workdir) as tmp:
        say("preparing the model of every row (building INT8 models, NNCF accuracy control: minutes)")
        plans = _plans(src, gen, paths, Path(tmp), s.rows)
        say(f"reference MC for the physics metric ({s.n_reference:,} showers, GFlash tuning {src.tuning})")
        ev = PhysicsEvaluator(gen.spec, s.evaluation, tuning=src.tuning)
        for k, plan in enumerate(plans, 1):
            r = plan.row
            if r.missing:
                say(f"[{k}/{len(plans)}] {r.name}: not measured ({r.missing})")
                continue
            if r.key == "geant4":
                say(f"[{k}/{len(plans)}] {r.name}: CPU time per shower at {GEANT4_POINTS} energies (about a minute)")
                _geant4_row(r, gen.spec, cores)
                continue
            say(f"[{k}/{len(plans)}] {r.name}: speed and memory in a fresh process")
            config = ({"kind": "mc", "energy": list(gen.spec.energy_range), "seconds": s.seconds, "cores": cores,
                       "tuning": src.tuning}
                      if r.key == "mc" else {"kind": "generator", "model": gen.source, "engine": r.engine,
                                             "precision": plan.precision_arg, "seconds": s.seconds, "cores": cores})
            try:
                t = _timings(config)
            except Interrupted:  # Ctrl-C / SIGTERM stop the bench (130/143), never a row
                raise
            except CaloquantError as e:
                r.missing = str(e)
                continue
            r.ms_per_shower_b1, r.ms_per_shower_b128 = t["b1"]["ms_per_shower"], t["large"]["ms_per_shower"]
            r.showers_per_s_single = t["large"]["showers_per_s"]
            r.showers_per_s_multistream, r.streams = t["multi"]["showers_per_s"], t["multi"]["streams"]
            r.peak_rss_mb, r.model_mb = t["peak_rss_mib"], plan.model_mb
            say(f"[{k}/{len(plans)}] {r.name}: physics on {s.n_showers:,} showers")
            r.metric, r.metric_error = (_mc_physics(gen.spec, ev, s, src.tuning) if r.key == "mc" else
                                        _generator_physics(gen, r.engine, plan.precision_arg, ev, s))
    rows = [p.row for p in plans]
    result = BenchResult(name, machine, asdict(s) | {"large_batch": LARGE_BATCH, "cores": cores,
                                                           "metric": "3dgan_moments (lower is better)",
                                                           "mc_tuning": src.tuning},
                         datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), rows)
    add_speedups(result)
    return result


def add_speedups(result: BenchResult) -> None:
    """Each measured row's N-stream throughput over that of PyTorch FP32, the MC and Geant4 (where measured)."""
    for ref_key, attr in (("pytorch-fp32", "speedup_vs_pytorch_fp32"), ("mc", "speedup_vs_mc"),
                          ("geant4", "speedup_vs_geant4")):
        ref = result.row(ref_key)
        for r in result.rows:
            if ref and ref.showers_per_s_multistream and r.showers_per_s_multistream:
                setattr(r, attr, r.showers_per_s_multistream / ref.showers_per_s_multistream)


def _geant4_row(r: Row, spec: ModelSpec, cores: int) -> None:
    """Fill the Geant4 row: one shower per worker at a time, one worker per core (independent processes)."""
    try:
        rate = geant4_core_rate(spec)
    except Interrupted:  # Ctrl-C / SIGTERM stop the bench (130/143), never a row
        raise
    except CaloquantError as e:
        r.missing = str(e)
        return
    r.ms_per_shower_b1 = 1000.0 / rate
    r.showers_per_s_single, r.showers_per_s_multistream, r.streams = rate, rate * cores, cores
