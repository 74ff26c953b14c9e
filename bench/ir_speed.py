"""Throughput of the shipped ecal25's FP32 export and of tuned IR models, interleaved rounds in one process.

    python bench/ir_speed.py runs/quant-ecal25-0612/model.xml [MORE.xml ...]

One infer request per model (latency hint), batch 128 (the tuner's), energies log-spaced over 10-500 GeV, three
rounds of 4 s each; prints the median items/s and the ratio to FP32. Run it on an idle machine.
"""
import sys

import numpy as np
import caloquant.quantize.source as qs
from caloquant.export.files import read_model
from caloquant.models.registry import load_generator
from caloquant.quantize.evaluators import latents
from caloquant.quantize.openvino_backend import throughput
gen = load_generator("ecal25")
src = qs.resolve(gen)
models = {"fp32": src.model} | {p: read_model(p) for p in sys.argv[1:]}
x = latents(gen.spec, np.geomspace(10, 500, 128), 5)
res = {k: [] for k in models}
for _ in range(3):
    for k, m in models.items():
        res[k].append(throughput(m, x, seconds=4.0))
for k, v in res.items():
    rounds = ", ".join(f"{t:.1f}" for t in v)
    print(f"{k}: {np.median(v):.1f} items/s (rounds {rounds}), {np.median(v) / np.median(res['fp32']):.2f}x fp32")
