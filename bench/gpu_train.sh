#!/usr/bin/env bash
# One-shot GPU training of a 3DGAN, judged against independent Monte Carlo.
#
#   bench/gpu_train.sh MINUTES [OUTDIR]
#
# On a machine with CUDA and PyTorch (no network; caloquant from this checkout's src/ or installed):
#   1. simulates the training set (NTRAIN showers in SHARDS parallel processes), the validation set used for
#      model selection (NVAL) and the independent reference (NREF, seed 909), all at once;
#   2. trains ARCH for MINUTES on the GPU (`caloquant train`, bf16, data resident on the GPU, TRAIN_ARGS added);
#   3. generates showers at the reference's energies with the best generator and runs
#      `caloquant validate --json` (every metric, classifier included), printing one line per metric.
# Everything lands under OUTDIR: data/, run-K/ (weights, losses.csv, metrics.csv, curves.png), run-K.log,
# gen-K.h5, validate.json, summary.txt. A 6-minute training takes about 8.5 minutes in all on one H200 with 16 cores.
# Environment knobs (defaults): ARCH (ecal25), NTRAIN (100000), NVAL (5000), NREF (10000), SHARDS (8),
# BATCH (256), EVAL_EVERY (400), PYTHON (python3), DEVICE (cuda; cpu for a smoke test), TRAIN_ARGS ("").
set -euo pipefail
MINUTES=${1:?usage: bench/gpu_train.sh MINUTES [OUTDIR]}
cd "$(dirname "$0")/.."
OUT=${2:-runs/gpu-train-$(date -u +%Y%m%dT%H%M%S)}
ARCH=${ARCH:-ecal25}
NTRAIN=${NTRAIN:-100000}
NVAL=${NVAL:-5000}
NREF=${NREF:-10000}
SHARDS=${SHARDS:-8}
BATCH=${BATCH:-256}
EVAL_EVERY=${EVAL_EVERY:-400}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if [[ $ARCH == ecal25 ]]; then GEOM=(--window 25x25x25 --angle 90); else GEOM=(--window 51x51x25 --angle 60:120); fi
cq() { "$PY" -m caloquant.cli "$@"; }
log() { echo "[gpu_train $(date -u +%H:%M:%S)] $*"; }

if [[ -e $OUT/run-0 ]]; then
    echo "gpu_train: $OUT already holds a run; choose another OUTDIR" >&2
    exit 2
fi
mkdir -p "$OUT/data"
log "simulating $NTRAIN training, $NVAL validation and $NREF reference showers ($ARCH) in $((SHARDS + 2)) processes"
pids=()
per=$(( (NTRAIN + SHARDS - 1) / SHARDS ))
for i in $(seq 0 $((SHARDS - 1))); do
    cq simulate -o "$OUT/data/train-$i.h5" --n "$per" --energy 10:500 "${GEOM[@]}" --seed $((100 + i)) -q & pids+=($!)
done
cq simulate -o "$OUT/val.h5" --n "$NVAL" --energy 10:500 "${GEOM[@]}" --seed 2 -q & pids+=($!)
cq simulate -o "$OUT/ref.h5" --n "$NREF" --energy 10:500 "${GEOM[@]}" --seed 909 -q & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done

IFS='|' read -r -a VARIANTS <<< "${TRAIN_ARGS:-}"
[[ ${#VARIANTS[@]} -gt 0 ]] || VARIANTS=("")
log "training $ARCH for $MINUTES minutes (batch $BATCH), ${#VARIANTS[@]} variant(s) side by side on the GPU"
pids=()
for k in "${!VARIANTS[@]}"; do
    echo "${VARIANTS[$k]}" > "$OUT/run-$k.args"
    # shellcheck disable=SC2086 # a variant is a list of options
    cq train "$OUT/data" --val "$OUT/val.h5" -o "$OUT/run-$k" --arch "$ARCH" --device "$DEVICE" --batch "$BATCH" \
        --max-minutes "$MINUTES" --eval-every "$EVAL_EVERY" --checkpoint-every 1000 -q ${VARIANTS[$k]} \
        > "$OUT/run-$k.log" 2>&1 & pids+=($!)
done
for k in "${!pids[@]}"; do wait "${pids[$k]}" || log "run-$k failed (see $OUT/run-$k.log)"; done
cat "$OUT"/run-*.log

log "generating at the reference energies and validating against $NREF independent MC showers"
gens=()
for k in "${!VARIANTS[@]}"; do
    [[ -e $OUT/run-$k/generator-best.pt ]] || continue
    "$PY" bench/eval_generator.py "$OUT/run-$k/generator-best.pt" "$OUT/ref.h5" -o "$OUT/gen-$k.h5" --device "$DEVICE"
    gens+=("$OUT/gen-$k.h5")
done
[[ ${#gens[@]} -gt 0 ]] || { log "no run produced a generator"; exit 1; }
cq validate "$OUT/ref.h5" "${gens[@]}" --json "$OUT/validate.json" -q >/dev/null
"$PY" - "$OUT" "${gens[@]}" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out, gens = Path(sys.argv[1]), [Path(g) for g in sys.argv[2:]]
res = json.loads((out / "validate.json").read_text())
cands = list((res.get("candidates") or {res.get("candidate"): res}).values())
for gen, cand in zip(gens, cands):
    run = gen.stem.replace("gen-", "run-")
    card = json.loads((out / run / "generator-best.json").read_text())
    args = (out / f"{run}.args").read_text().strip() or "defaults"
    print(f"== {run} ({args}): best step {card['step']}, held-out selection metric {card['best_metric']:.4g}")
    for metric, m in cand["metrics"].items():
        print(f"{metric:28s} {m['value']:.4g} +- {m['error']:.2g} (MC noise floor {m['noise_floor']:.2g})")
PY
log "done: $OUT"
