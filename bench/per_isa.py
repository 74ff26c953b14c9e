"""Benchmark: the "Per ISA" row of docs/benchmarks.md on this machine.

ms per shower of PyTorch FP32, OpenVINO FP32 and OpenVINO BF16 at batch 16 on one stream (inference only,
``caloquant.runtime.measure_throughput``, 3 s each), and the physics guard's BF16 check against FP32, run afresh
in a private model cache so that no cached pass stands in for it.

    python bench/per_isa.py [MODEL]
"""

from __future__ import annotations

import os
import sys
import tempfile

from caloquant.machine import isa_identity
from caloquant.runtime import measure_throughput, open_generator


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "ecal25"
    os.environ["CALOQUANT_CACHE_DIR"] = tempfile.mkdtemp(prefix="caloquant-per-isa-")  # read at each call

    print(isa_identity())
    for engine, precision in (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
        t = measure_throughput(model, engine=engine, precision=precision, batch=16, streams=1, seconds=3)
        print(f"{engine} {precision}: {t.ms_per_shower:.2f} ms/shower")
    check = open_generator(model, precision="bf16", batch=16, streams=1).check
    print("guard:", check.describe() if check else "not checked")


if __name__ == "__main__":
    main()
