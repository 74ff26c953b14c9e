"""The shipped generator and the GFlash engine against Geant4-engine samples at fixed energies (model card).

Usage: python bench/model_vs_geant4.py G4DIR OUTDIR [E ...]
G4DIR holds geant4_<E>GeV.h5 or g4_<E>.h5 (1,000 perpendicular showers each, e.g. from
``caloquant calibrate --keep-references G4DIR``). For every energy it generates 1,000 showers with the shipped
``ecal25`` (PyTorch FP32; its row names the GFlash tuning it learned, its card's) and 1,000 GFlash showers, plain
and tuned (``--tuning geant4``), prints the calibration quantities of all four with deviations from Geant4, then
runs ``caloquant validate`` (one energy bin, no classifier) of the generator against Geant4 and prints its main
metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from caloquant.calibrate import comparison_table, summarise
from caloquant.calibrate.workflow import read_reference
from caloquant.cli import main
from caloquant.models import model_card
from caloquant.models.card import card_tuning
from caloquant.simulate import simulate
from caloquant.simulate.tuning import load_tuning

N = 1000
METRICS = ("3dgan_moments", "sampling_fraction_mre", "chi2_ndf_mean", "separation_power_mean", "fpd", "kpd")


def reference_file(folder: Path, energy: float) -> Path:
    """The Geant4 sample at ``energy`` in ``folder`` (either naming)."""
    for name in (f"geant4_{energy:g}GeV.h5", f"g4_{energy:g}.h5"):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"no Geant4 sample at {energy:g} GeV in {folder}")


def metric_cells(path: Path) -> list[str]:
    """value +- error of METRICS from a ``validate --json`` document."""
    metrics = json.loads(path.read_text())["metrics"]
    cells = []
    for name in METRICS:
        m = metrics[name]
        cells.append(f"{m['value']:.4g} ± {m['error']:.2g} (floor {m['noise_floor']:.2g})")
    return cells


def run(g4dir: Path, out: Path, energies: list[float]) -> None:
    """Generate, summarise and validate at every energy; print two markdown tables."""
    out.mkdir(parents=True, exist_ok=True)
    rows, metric_rows = [], []
    tuned = load_tuning("geant4")
    learned = card_tuning(model_card("ecal25"), "ecal25")
    gan_row = "ecal25 GAN" if learned == "none" else f"ecal25 GAN ({learned}-tuned MC)"
    for k, e in enumerate(energies):
        ref_path = reference_file(g4dir, e)
        gan_path = out / f"gan_{e:g}.h5"
        if not gan_path.exists():
            assert main(["generate", "--model", "ecal25", "-o", str(gan_path), "--n", str(N), "--energy", f"{e:g}",
                         "--engine", "torch", "--seed", str(100 + k), "-q"]) == 0
        ref = summarise(read_reference(ref_path), where=str(ref_path))
        rows += [("Geant4", ref, None),
                 ("GFlash", summarise(simulate(N, e, seed=200 + k)), ref),
                 ("GFlash tuned", summarise(simulate(N, e, seed=200 + k, tuning=tuned)), ref),
                 (gan_row, summarise(read_reference(gan_path), where=str(gan_path)), ref)]
        doc = out / f"validate_{e:g}.json"
        if not doc.exists():
            assert main(["validate", str(ref_path), str(gan_path), "--bins", "1", "--no-classifier", "--json",
                         str(doc), "-q"]) in (0, 1)
        metric_rows.append(f"| {e:g} | " + " | ".join(metric_cells(doc)) + " |")
        print(f"{e:g} GeV done", file=sys.stderr, flush=True)
    print(comparison_table(rows))
    print()
    print("| E (GeV) | " + " | ".join(METRICS) + " |")
    print("|" + "---|" * (len(METRICS) + 1))
    print("\n".join(metric_rows))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    run(Path(sys.argv[1]), Path(sys.argv[2]), [float(a) for a in sys.argv[3:]] or [10.0, 50.0, 100.0, 200.0])
