"""Benchmark: validate 10k vs 10k 25x25x25 showers with every metric but the classifier (goal <= 60 s).

Simulates two reference-MC files once (cached under --workdir), then times ``validate`` end to end from the
files: chunked feature extraction of both, noise floor, bootstrap errors, FPD and KPD.

    .venv/bin/python bench/validate_speed.py [--n 10000] [--workdir /tmp/caloquant_bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from caloquant.simulate import simulate_to_file
from caloquant.validate import MetricOptions, compute_features, validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--energy", default="10:500")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/caloquant_bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in (1, 2):
        p = args.workdir / f"mc_{args.n}_{args.energy.replace(':', '-')}_s{seed}.h5"
        if not p.exists():
            simulate_to_file(p, args.n, args.energy, seed=seed)
        paths.append(p)
    t0 = time.perf_counter()
    ref = compute_features(paths[0])
    cand = compute_features(paths[1])
    t1 = time.perf_counter()
    result = validate(ref, [cand], options=MetricOptions(classifier=False))
    t2 = time.perf_counter()
    print(f"{args.n} vs {args.n} showers, window {ref.window}, energy {args.energy} GeV")
    print(f"features (both files, chunked): {t1 - t0:.1f} s")
    print(f"metrics + noise floor:          {t2 - t1:.1f} s")
    print(f"total:                          {t2 - t0:.1f} s")
    for name, m in next(iter(result.candidates.values())).metrics.items():
        print(f"  {name:26s} {m.value:.5g} +- {m.error:.2g} (noise {m.noise_floor:.3g}) pass={m.passed}")


if __name__ == "__main__":
    main()
