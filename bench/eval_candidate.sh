#!/usr/bin/env bash
# Judge a generator as a successor would ship: decoded through the MC's readout threshold, against the campaign's
# comparison sample (10,000 MC showers, seed 2303), with `caloquant validate` and bench/fluctuations.py.
#
#   bash bench/eval_candidate.sh NAME CHECKPOINT [REF.h5] [OUTDIR]     # about 6 minutes on 2 idle cores
#
# Make the reference once:  caloquant simulate -o scratch/ecal25/ref10k.h5 --n 10000 --energy 10:500 --seed 2303 \
#                               --tuning geant4
# Writes OUTDIR/NAME.h5 (the generated showers), NAME.json (validate's metrics, per feature too) and
# NAME-fluct.txt (cells, resolution and spreads per energy quartile), then prints the headline figures.
set -euo pipefail
name=${1:?NAME}; ckpt=${2:?CHECKPOINT}; ref=${3:-scratch/ecal25/ref10k.h5}; out=${4:-runs/val}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
"$py" bench/eval_generator.py "$ckpt" "$ref" -o "$out/$name.h5" --readout-threshold 9.68864e-05
"$py" -m caloquant.cli validate "$ref" "$out/$name.h5" --json "$out/$name.json" -q
"$py" bench/fluctuations.py "$ref" "$out/$name.h5" > "$out/$name-fluct.txt"
"$py" - "$out/$name.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
keys = ("3dgan_moments", "3dgan_profiles", "sampling_fraction_mre", "separation_power_mean", "chi2_ndf_mean",
        "cell_spectrum_separation", "fpd", "kpd", "classifier_auc")
print(" ".join(f"{k}={m[k]['value']:.4g}+-{m[k].get('error') or 0:.2g}" for k in keys if k in m))
PY
