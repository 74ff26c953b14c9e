"""Standalone PyTorch reproduction: oneDNN's BF16 3-D convolution against FP32, for the shapes of the ecal25 networks.

Each convolution runs on a fixed random input in FP32 and under CPU BF16 autocast; the relative L2 deviation of
the BF16 output is printed with a verdict (BF16 rounding gives 0.3 %; over ``--tolerance`` counts as wrong). On an
Intel Xeon with AMX and torch 2.13 (2026-12-05) the generator's first convolution (8 input channels, kernel
6x6x8) came out 110 % off while every other shape was right; under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` all
agree, and so does the same convolution with 16 input channels: the trainer computes a convolution that BF16
gets wrong with zero-padded input channels (``caloquant.models.bf16.repair_bf16_convs``).

    python bench/amx_bf16_repro.py                                     # this machine as it is
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python bench/amx_bf16_repro.py  # capped below AMX

Needs only torch. Exit status 1 when any shape deviates, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

#: (input channels, output channels, kernel, input spatial shape): the ecal25 generator's convolutions, the light
#: critic's first, and controls that differ from the failing one in a single number.
SHAPES = [
    (8, 64, (6, 6, 8), (12, 12, 15)),   # generator block1 (after its 'same' padding)
    (64, 6, (6, 5, 8), (18, 18, 16)),   # generator block2
    (6, 6, (3, 3, 8), (52, 50, 55)),    # generator block3
    (8, 16, (3, 3, 3), (15, 15, 15)),   # light critic, first
    (16, 64, (6, 6, 8), (12, 12, 15)),  # block1 with 16 input channels
    (8, 16, (6, 6, 8), (12, 12, 15)),   # block1 with 16 output channels
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=0.05, help="relative L2 deviation counted as wrong")
    args = ap.parse_args()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    print(f"torch {torch.__version__}, ISA {' '.join(shown) or '-'}, "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}")
    torch.manual_seed(0)
    bad = 0
    for cin, cout, kernel, shape in SHAPES:
        conv = torch.nn.Conv3d(cin, cout, kernel)
        x = torch.randn(args.batch, cin, *shape)
        with torch.no_grad():
            ref = conv(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = conv(x).float()
        dev = float((low - ref).norm() / ref.norm())
        wrong = dev > args.tolerance
        bad += wrong
        print(f"  Conv3d({cin:>2}, {cout:>2}, kernel={kernel}) on {shape}: BF16 {dev:7.2%} off FP32"
              f"{'  WRONG' if wrong else ''}")
    print(f"verdict: {bad} of {len(SHAPES)} shapes wrong in BF16" if bad else "verdict: BF16 agrees with FP32")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
