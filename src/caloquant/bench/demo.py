"""The end-to-end demo: every stage of the data flow, run in order into ``runs/<timestamp>/``.

load the generator -> simulate a reference sample (GFlash with the tuning of the MC the generator learned, its
card's) -> tune it (physics-judged INT8) -> build the full-INT8 baseline and the NNCF accuracy-control peer ->
validate FP32 / full INT8 / tuned against the MC -> benchmark every deployment -> ``report.html``
(self-contained) and a summary table in the terminal. Each stage prints its progress; the run directory keeps
every artefact so any number can be re-checked with the other commands.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from caloquant._atomic import write_text_atomic
from caloquant._optional import require
from caloquant.bench.compare import BenchResult, BenchSettings, run_bench
from caloquant.bench.deployments import build_full_int8, build_nncf_accuracy_control
from caloquant.bench.tables import mc_tuning, rich_table, update_markdown
from caloquant.data import read_showers, write_showers
from caloquant.data.summary import print_summary
from caloquant.errors import InputError, ModelError
from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
from caloquant.models.card import tuning_name
from caloquant.quantize import AccuracyNotReachedError
from caloquant.quantize.source import ResolvedModel, resolve
from caloquant.quantize.workflow import quantize_generator
from caloquant.runtime import open_generator
from caloquant.simulate import simulate_to_file
from caloquant.simulate.engine import check_seed
from caloquant.validate import MetricOptions, paired_difference, validate

@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults fit in 15 minutes on 2 cores."""

    out_dir: Path = field(default_factory=lambda: Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    model: str = "ecal25"
    n_reference: int = 5000
    energy: str = "10:500"
    seed: int = 2026
    progress: bool = True
    #: as `caloquant quantize` (its seed too; the bench judges on others): fewer showers make the 5 % tolerance hard
    #: to resolve
    tune: EvaluationSettings = DEFAULT_EVALUATION
    tune_candidates: int = 12
    tune_minutes: float = 5.0
    n_validate: int = 2000
    classifier: bool = True
    bench: BenchSettings = field(default_factory=lambda: BenchSettings(seconds=2.0, n_showers=1024))
    #: GFlash tuning of every MC sample the generator is compared with (reference, tuner, bench); None: the model
    #: card's (the tuning of the MC it learned)
    tuning: str | None = None

    def check(self) -> None:
        """One-line InputError for sizes the stages cannot use."""
        if self.n_reference < 100 or self.n_validate < 50:
            raise InputError("the demo needs at least 100 reference and 50 validation showers")
        if self.n_validate > self.n_reference:
            raise InputError(f"--n-validate ({self.n_validate}) cannot exceed --n-reference ({self.n_reference})")
        self.tune.check()
        check_seed(self.seed)
        if self.tune_candidates < 2 or not 0 < self.tune_minutes < float("inf"):
            raise InputError("the tuner needs at least 2 candidates and a positive time budget")
        self.bench.check()
        if self.tuning is not None:
            tuning_name(self.tuning, "--tuning")


@dataclass
class DemoResult:
    """What the demo produced: stage times, the benchmark table, the report and the run directory."""

    out_dir: Path
    times: dict[str, float]
    bench: BenchResult
    report: Path
    tuning_accepted: bool


def _models(cfg: DemoConfig, src: ResolvedModel, say: Any) -> dict[str, Path]:
    """Tune (into out/quantize), then build the full-INT8 baseline and the NNCF peer; IR path per bench row."""
    qdir = cfg.out_dir / "quantize"
    try:
        quantize_generator(src, qdir, max_candidates=cfg.tune_candidates, max_minutes=cfg.tune_minutes,
                           evaluation=cfg.tune, overwrite=True, log=say)
    except AccuracyNotReachedError as e:
        say(f"tuner: {e} (continuing with the closest candidate; the report says so)")
    say("full INT8 (every layer, min/max ranges)")
    full = build_full_int8(src, cfg.out_dir / "full_int8.xml")
    say("NNCF accuracy-control peer (same calibration data, metric, showers and tolerance as the tuner)")
    nncf = build_nncf_accuracy_control(src, cfg.out_dir / "nncf_ac.xml", evaluation=cfg.tune)
    return {"full-int8": full, "tuned": qdir / "model.xml", "nncf-ac": nncf}


def _validate(cfg: DemoConfig, gen: Any, models: dict[str, Path], say: Any) -> tuple[Any, dict[str, Any]]:
    """Generate FP32, full-INT8 and tuned showers for the reference's energies; full and paired validation."""
    ref_path = cfg.out_dir / "reference.h5"
    energies = read_showers(ref_path, 0, cfg.n_validate).energy
    files = {}
    for name, precision in (("FP32", "fp32"), ("full INT8", str(models["full-int8"])),
                            ("tuned", str(models["tuned"]))):
        say(f"generating {len(energies):,} showers with {name} (OpenVINO)")
        # the full-INT8 baseline is shown precisely because its physics is off: the FP32 guard would refuse it
        g = open_generator(gen, engine="openvino", precision=precision, batch=128, check=name != "full INT8")
        path = cfg.out_dir / f"generated_{name.replace(' ', '_').lower()}.h5"
        files[name] = write_showers(path, g.generate(energies, seed=cfg.seed))
    result = validate(ref_path, list(files.values()), names=list(files), log=say,
                      options=MetricOptions(classifier=cfg.classifier))
    paired = {f"FP32 (A) vs {name} (B)": paired_difference(ref_path, files["FP32"], files[name])
              for name in ("full INT8", "tuned")}
    write_text_atomic(cfg.out_dir / "validation.json", json.dumps(
        result.to_dict() | {"paired": {k: vars(p) for k, p in paired.items()}}, indent=2, default=float))
    return result, paired


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run every stage into ``cfg.out_dir``; returns the stage times, the bench table and the report path."""
    cfg.check()
    console = Console()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def say(msg: str) -> None:
        console.print(f"  {msg}", highlight=False)

    @contextlib.contextmanager
    def stage(key: str, title: str) -> Iterator[None]:
        console.rule(f"[bold]{len(times) + 1}. {title}")
        t0 = time.perf_counter()
        yield
        times[key] = time.perf_counter() - t0
        console.print(f"[green]{key} done in {times[key]:.1f} s[/]")

    with stage("load", f"load the generator {cfg.model}"):
        src = resolve(cfg.model)
        gen = src.generator
        if gen is None:
            raise ModelError(f"{cfg.model}: the demo runs a caloquant generator (a shipped name or a checkpoint)")
        say(f"{gen.source} (sha256 {gen.sha256[:16]}...), {gen.spec.arch}, window {gen.spec.window}, "
            f"{gen.spec.energy_range[0]:g}-{gen.spec.energy_range[1]:g} GeV, trained on GFlash tuning {src.tuning}")
        if cfg.tuning is not None:
            src = replace(src, tuning=cfg.tuning)
    with stage("simulate", f"simulate: reference Monte Carlo (GFlash tuning {src.tuning})"):
        ref = simulate_to_file(cfg.out_dir / "reference.h5", cfg.n_reference, cfg.energy, seed=cfg.seed,
                               progress=cfg.progress, tuning=src.tuning)
        print_summary(ref)
    with stage("tune", "quantize: physics-judged tuning, full INT8, NNCF accuracy-control peer"):
        models = _models(cfg, src, say)
    with stage("validate", "validate FP32 / full INT8 / tuned against the reference MC"):
        validation, paired = _validate(cfg, gen, models, say)
    with stage("bench", "bench: every deployment side by side"):
        bench = run_bench(src, given=models, settings=cfg.bench, say=say)
        write_text_atomic(cfg.out_dir / "bench.json", bench.to_json())
        update_markdown(cfg.out_dir / "bench.md", bench)
    tuning = json.loads((cfg.out_dir / "quantize" / "history.json").read_text())
    with stage("report", "report"):
        figures, demo_report = require("caloquant.plotting.figures"), require("caloquant.bench.report")
        (cfg.out_dir / "summary.png").write_bytes(figures.png_bytes(demo_report.speed_vs_physics(bench), 110))
        report = demo_report.write_demo_report(
            cfg.out_dir / "report.html", bench=bench, times=times, validation=validation, paired=paired,
            tuning=tuning, notes=[f"Reference MC: {cfg.n_reference:,} showers, {cfg.energy} GeV, "
                                  f"{mc_tuning(bench)}.",
                                  f"Run directory: {cfg.out_dir}."])
    Console(width=max(160, console.width)).print(rich_table(bench))  # wide even when not a terminal
    table = Table(title=f"demo finished: {report}")
    table.add_column("stage")
    table.add_column("wall time", justify="right")
    for key, seconds in times.items():
        table.add_row(key, f"{seconds:.1f} s")
    table.add_row("total", f"{sum(times.values()):.1f} s")
    console.print(table)
    return DemoResult(cfg.out_dir, times, bench, report, bool(tuning["accepted"]))
