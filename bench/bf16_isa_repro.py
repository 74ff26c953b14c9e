"""Standalone OpenVINO CPU reproduction of FP32 vs BF16 (INFERENCE_PRECISION_HINT), layer by layer (issue 12).

It compiles the ecal25 generator IR in f32 and in bf16 on a fixed batch, then each prefix of the graph (the
model cut after one op) in both precisions, and names the first op whose BF16 result deviates from FP32 by
more than BF16 rounding explains. It prints the OpenVINO version, the CPU model and ISA flags, any ISA cap,
the kernels (exec-graph primitive types) that ran the deviating op, and a one-line verdict.

Needs only numpy and openvino once the IR exists. Make it on any machine with caloquant (and torch):

    python bench/bf16_isa_repro.py --export ecal25_ir        # writes ecal25_ir/model.xml/.bin + input.npy

then, on the machine under test (about 10 s on 16 cores):

    python bench/bf16_isa_repro.py --xml ecal25_ir/model.xml
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 OV_CPU_MAX_ISA=AVX512_CORE_BF16 python bench/bf16_isa_repro.py --xml ...

Without --xml it exports to a temporary folder first (needs caloquant). Exit status: 0 when BF16 agrees with
FP32, 1 when an op deviates, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: ISA caps read by oneDNN (in OpenVINO) and by OpenVINO's CPU plugin; set them together.
CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
#: Relative L2 deviation of an op's BF16 output from FP32 that counts as wrong. BF16 rounds to 8 significand
#: bits (2^-9 = 0.2 % per value); errors grow roughly with depth, and ~1-3 % is normal at the output of a
#: generator of a few layers. 10 % is well above that and far below a broken kernel (issue 12: ~100 %).
THRESHOLD = 0.10
SKIP = {"Parameter", "Constant", "Result", "ShapeOf"}


def cpu() -> tuple[str, list[str]]:
    """CPU model name and the relevant ISA flags from /proc/cpuinfo."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, [f for f in FLAGS if f in flags]


def export(outdir: Path) -> Path:
    """Export the shipped ecal25 generator to IR plus a fixed input batch (needs caloquant)."""
    from caloquant.export import export_openvino
    from caloquant.models import load_generator, shower_noise

    gen = load_generator("ecal25")
    outdir.mkdir(parents=True, exist_ok=True)
    xml = export_openvino(gen, outdir / "model.xml")
    energies = np.geomspace(10.0, 500.0, 16)
    np.save(outdir / "input.npy", gen.spec.latent(energies, None, shower_noise(0, np.arange(16), gen.spec.noise_size)))
    return xml


def relative(a: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 deviation ||a - ref|| / ||ref|| (inf where a is not finite)."""
    a64, r64 = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if not np.all(np.isfinite(a64)):
        return float("inf")
    return float(np.linalg.norm(a64 - r64) / max(float(np.linalg.norm(r64)), 1e-30))


def run(core: Any, model: Any, x: np.ndarray, hint: str) -> tuple[np.ndarray, Any]:
    """Output of ``model`` on ``x`` compiled with this inference precision hint, and the compiled model."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
    return np.array(compiled(x)[0]), compiled


def kernels(compiled: Any, name: str) -> str:
    """Exec-graph primitive types of the nodes that originate from op ``name`` (fused nodes included)."""
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if name in str(info["originalLayersNames"].astype(str)).split(","):
            found.append(f"{op.get_friendly_name()}={info['primitiveType'].astype(str)}")
    return "; ".join(found) or "?"


def main(argv: list[str] | None = None) -> int:
    """Compare FP32 and BF16 on the whole model and per op; print the verdict; exit 0 (agree) or 1 (deviates)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xml", type=Path, help="OpenVINO IR of the generator (default: export ecal25 now)")
    ap.add_argument("--input", type=Path, help="input batch .npy (default: input.npy next to the IR, else random)")
    ap.add_argument("--export", type=Path, metavar="DIR", help="only export the IR and input to DIR, then exit")
    ap.add_argument("--threshold", type=float, default=THRESHOLD, help="relative deviation that counts as wrong")
    args = ap.parse_args(argv)
    if args.export:
        print(f"wrote {export(args.export)} and {args.export / 'input.npy'}")
        return 0
    import openvino as ov

    t0 = time.perf_counter()
    xml = args.xml or export(Path(tempfile.mkdtemp(prefix="bf16_repro_")))
    if not xml.exists():
        print(f"bf16_isa_repro: error: {xml}: no such IR", file=sys.stderr)
        return 2
    inp = args.input or xml.with_name("input.npy")
    x = np.load(inp).astype(np.float32) if inp.exists() else \
        np.random.default_rng(0).standard_normal((16, 200)).astype(np.float32)
    core = ov.Core()
    model, (name, flags) = core.read_model(str(xml)), cpu()
    model.reshape({model.inputs[0].any_name: list(x.shape)})
    caps = {v: os.environ[v] for v in CAP_VARS if os.environ.get(v)}
    print(f"openvino {ov.get_version()}; CPU {name}; flags {' '.join(flags) or 'none of ' + ' '.join(FLAGS)}; "
          f"caps {caps or 'none'}; OPTIMIZATION_CAPABILITIES {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    full32, _ = run(core, model, x, "f32")
    full16, _ = run(core, model, x, "bf16")
    print(f"whole model: output sum f32 {full32.sum():.6g}, bf16 {full16.sum():.6g} "
          f"(ratio {full16.sum() / full32.sum():.4f}), relative L2 deviation {relative(full16, full32):.3g}")
    first = None
    print(f"{'op':<48} {'type':<26} {'rel dev':>9}")
    for op in model.get_ordered_ops():
        if op.get_type_name() in SKIP or op.get_output_size() != 1 or op.get_output_element_type(0) != ov.Type.f32:
            continue
        prefix = ov.Model([op.output(0)], model.get_parameters(), f"upto_{op.get_friendly_name()}")
        y32, _ = run(core, prefix, x, "f32")
        y16, compiled16 = run(core, prefix, x, "bf16")
        dev = relative(y16, y32)
        mark = " <-- deviates" if dev > args.threshold and first is None else ""
        print(f"{op.get_friendly_name()[:48]:<48} {op.get_type_name():<26} {dev:>9.3g}{mark}")
        if mark:
            first = (op, dev, kernels(compiled16, op.get_friendly_name()))
    seconds = time.perf_counter() - t0
    if first is None:
        native = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(f"VERDICT: BF16 agrees with FP32 (whole-model deviation {relative(full16, full32):.3g} <= "
              f"{args.threshold}) on {name} with caps {caps or 'none'}"
              f"{'' if native else ' (no native BF16 here: OpenVINO ran the bf16 hint in f32)'} ({seconds:.0f} s)")
        return 0
    op, dev, prims = first
    print(f"VERDICT: BF16 deviates first at {op.get_friendly_name()} ({op.get_type_name()}): relative deviation "
          f"{dev:.3g} > {args.threshold}; bf16 kernels {prims}; on {name} with caps {caps or 'none'}, "
          f"openvino {ov.get_version()} ({seconds:.0f} s)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
