"""Speed and peak memory of one benchmark row, measured in a process of its own.

``python -m caloquant.bench.worker JSON`` prints one JSON line. A generator row times inference (latent in,
raw shower out) at batch 1 and at the large batch on one stream, then at the large batch on one stream per
core; the reference-MC row times ``simulate`` calls of 1 and of ``LARGE_BATCH`` showers (with the GFlash tuning
the model learned) in one process, then one process per core. Peak RSS is the largest resident set of any one
process of the row.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from caloquant.geometry import parse_window
from caloquant.runtime import measure_throughput, open_generator
from caloquant.simulate import AngleRange, ShowerSimulator, Spectrum, load_tuning

#: The large batch of the table (column ``ms_per_shower_b128``).
LARGE_BATCH = 128


def peak_rss_mib() -> float:
    """Peak resident memory of this process, MiB: VmHWM of its own address space where /proc has it.

    ``ru_maxrss`` is avoided on Linux because after fork + exec it still holds the parent's resident size.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_generator(model: str, engine: str, precision: str, seconds: float, cores: int) -> dict[str, Any]:
    """ms/shower at batch 1 and ``LARGE_BATCH`` (one stream), showers/s at ``LARGE_BATCH`` on ``cores`` streams."""
    out: dict[str, Any] = {}
    for key, batch, streams in (("b1", 1, 1), ("large", LARGE_BATCH, 1), ("multi", LARGE_BATCH, cores)):
        gen = open_generator(model, engine=engine, precision=precision, batch=batch, streams=streams,
                             check=False)  # timing only; the physics column is scored in compare.py
        t = measure_throughput(gen, seconds=seconds, min_batches=2, warmup=1)
        out[key] = {"ms_per_shower": t.ms_per_shower, "showers_per_s": t.showers_per_s, "streams": t.streams}
        del gen
        gc.collect()
    return out


def _mc_rate(energy: tuple[float, float], n: int, seconds: float, barrier: Any = None, tuning: str = "none"
             ) -> float:
    """Showers/s of repeated ``simulate`` calls of ``n`` showers after a warm-up (and after ``barrier``)."""
    sim = ShowerSimulator(parse_window("25x25x25"), tuning=load_tuning(tuning))
    spec, angle = Spectrum(*energy), AngleRange(90.0, 90.0)
    sim.simulate(8, spec, angle)  # numba compilation and caches, not timed
    if barrier is not None:
        barrier.wait()
    done, t0 = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - t0 < seconds:
        sim.simulate(n, spec, angle, seed=1, start_index=done)
        done += n
    return done / (time.perf_counter() - t0)


def _mc_process(energy: tuple[float, float], n: int, seconds: float, barrier: Any, results: Any,
                tuning: str = "none") -> None:
    rate = _mc_rate(energy, n, seconds, barrier, tuning)
    results.put((rate, peak_rss_mib()))


def measure_mc(energy: tuple[float, float], seconds: float, cores: int, tuning: str = "none") -> dict[str, Any]:
    """The reference MC (GFlash with ``tuning``) timed like a generator row; multi-stream = one process per core,
    timed together."""
    b1 = _mc_rate(energy, 1, seconds, tuning=tuning)
    large = _mc_rate(energy, LARGE_BATCH, seconds, tuning=tuning)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(cores), ctx.Queue()
    procs = [ctx.Process(target=_mc_process, args=(energy, LARGE_BATCH, seconds, barrier, results, tuning))
             for _ in range(cores)]
    for p in procs:
        p.start()
    done = [results.get() for _ in procs]
    for p in procs:
        p.join()
    multi = sum(rate for rate, _ in done)
    return {"b1": {"ms_per_shower": 1000.0 / b1, "showers_per_s": b1, "streams": 1},
            "large": {"ms_per_shower": 1000.0 / large, "showers_per_s": large, "streams": 1},
            "multi": {"ms_per_shower": 1000.0 / multi, "showers_per_s": multi, "streams": cores},
            "peak_rss_mib": max(peak_rss_mib(), *(rss for _, rss in done))}


def main(argv: list[str]) -> None:
    """Measure the row described by the JSON argument and print the result as one JSON line."""
    cfg = json.loads(argv[0])
    if cfg["kind"] == "mc":
        os.environ["OMP_NUM_THREADS"] = "1"
        out = measure_mc(tuple(cfg["energy"]), cfg["seconds"], cfg["cores"], cfg.get("tuning", "none"))
    else:
        out = measure_generator(cfg["model"], cfg["engine"], cfg["precision"], cfg["seconds"], cfg["cores"])
        out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
