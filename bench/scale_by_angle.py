"""Energy scale of an angle model against the MC, by energy and angle: where the resolution excess comes from.

Reads a reference file and a generated one with the same rows (``bench/eval_generator.py`` generates at the
reference's energies and angles) and prints, per energy band, the mean visible fraction (read-out sum / E) in
10-degree angle bins, and the relative spread of the visible fraction as it is, after a linear trend in energy,
and after a quadratic one in angle too. A spread that falls to the MC's once the angle trend is removed is an
angle-dependent energy scale, not a fluctuation.

    .venv/bin/python bench/scale_by_angle.py ref2k.h5 gen.h5 [--threshold 9.68864e-05]
"""

from __future__ import annotations

import argparse

import numpy as np

from caloquant.data import read_showers

BANDS = ((10, 20), (20, 30), (30, 50), (50, 100), (100, 200), (200, 500))
ANGLES = tuple(range(60, 121, 10))


def visible_fraction(path: str, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-shower read-out sum / E, the energies (GeV) and the angles (degrees) of ``path``."""
    s = read_showers(path)
    cells = s.ecal
    visible = np.where(cells > threshold, cells, 0).reshape(len(cells), -1).sum(1)
    return visible / s.energy, s.energy, np.degrees(s.theta)


def spreads(frac: np.ndarray, energy: np.ndarray, angle: np.ndarray) -> tuple[float, float, float]:
    """Relative spread of ``frac`` as it is, less a linear trend in energy, and less a quadratic one in angle."""
    mean = frac.mean()
    res = frac - np.polyval(np.polyfit(energy, frac, 1), energy)
    res2 = res - np.polyval(np.polyfit(angle, res, 2), angle)
    return float(frac.std() / mean), float(res.std() / mean), float(res2.std() / mean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("generated")
    ap.add_argument("--threshold", type=float, default=9.68864e-05, help="readout threshold (GeV)")
    args = ap.parse_args()
    samples = {name: visible_fraction(path, args.threshold) for name, path in
               (("MC", args.reference), ("model", args.generated))}
    head = " ".join(f"{a}-{b}" for a, b in zip(ANGLES[:-1], ANGLES[1:], strict=True))
    print(f"| energy (GeV) | sample | mean visible fraction by angle (degrees: {head}) | spread | less E trend "
          "| less angle trend |")
    print("|---|---|---|---|---|---|")
    for lo, hi in BANDS:
        for name, (frac, energy, angle) in samples.items():
            sel = (energy >= lo) & (energy < hi)
            if sel.sum() < 10:
                continue
            by_angle = [frac[sel & (angle >= a) & (angle < b)] for a, b in zip(ANGLES[:-1], ANGLES[1:], strict=True)]
            means = " ".join(f"{v.mean():.4f}" if len(v) else "-" for v in by_angle)
            s0, s1, s2 = spreads(frac[sel], energy[sel], angle[sel])
            print(f"| {lo}-{hi} ({sel.sum()}) | {name} | {means} | {s0:.3f} | {s1:.3f} | {s2:.3f} |")


if __name__ == "__main__":
    main()
