"""What the cell map costs at generation: showers/s of one model decoded plainly and through its map, end to end.

    python bench/cellmap_speed.py [MODEL] [--n 4096] [--rounds 3] [--precision fp32 int8]

MODEL (default: the shipped ecal25) must have a cell map. Both variants run its weights on the same engine
(OpenVINO, auto batch and streams) and differ only in the spec that decodes them (``ModelSpec.to_physical``:
readout threshold alone, or the map and then the threshold; a shipped model's INT8 recipe serves both);
rounds are interleaved in one process and the median showers/s of ``Generator.generate`` (energies uniform over
10-500 GeV) is printed with the mapped/plain ratio. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from caloquant.machine import describe_machine
from caloquant.models import load_generator
from caloquant.quantize import shipped_int8
from caloquant.runtime import open_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="ecal25", help="a generator with a cell map")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    args = ap.parse_args()
    mapped = load_generator(args.model)
    if mapped.spec.cell_map is None:
        raise SystemExit(f"error: {args.model} has no cell map")
    plain = replace(mapped, spec=replace(mapped.spec, cell_map=None))
    energies = np.random.default_rng(3).uniform(10.0, 500.0, args.n)
    print(f"# {describe_machine().get('cpu', '?')}; {args.n} showers per round, {args.rounds} rounds")
    for precision in args.precision:
        if precision == "int8":
            for g in (plain, mapped):
                shipped_int8(g)  # built once per spec (the cache keys carry the spec's digest)
        gens = {name: open_generator(g, precision=precision) for name, g in (("plain", plain), ("mapped", mapped))}
        rates: dict[str, list[float]] = {k: [] for k in gens}
        for g in gens.values():
            g.generate(energies[:256], seed=1)  # warm-up
        for _ in range(args.rounds):
            for name, g in gens.items():
                t = time.perf_counter()
                g.generate(energies, seed=2)
                rates[name].append(args.n / (time.perf_counter() - t))
        p, m = (float(np.median(rates[k])) for k in ("plain", "mapped"))
        print(f"{precision}: plain {p:.0f} showers/s, mapped {m:.0f} showers/s, mapped/plain {m / p:.2f}")


if __name__ == "__main__":
    main()
