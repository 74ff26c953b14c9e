#!/usr/bin/env bash
# One prepared device run for issue 23 (about 9 minutes on one H200 with 16 cores):
#   1. simulates the campaign's data (its exact simulate commands, GFlash in worker processes) while
#      bench/train_speed.py measures the reference and the campaign's training step on the GPU;
#   2. resumes the campaign (campaigns/ecal25) on the GPU for MIN minutes and, side by side on the same GPU,
#      copies of it with retuned loss weights (VARIANTS: name:key=value,key=value|...), each a candidate
#      for the campaign's next run;
#   3. brings back the campaign's state and each variant's (checkpoints and histories) through $OUT.
# Results: $OUT/results.tgz (host, logs, GPU use, train_speed tables, every folder's csv/json/png), $OUT/<name>-last.pt and
# $OUT/<name>-best.pt per folder (name: campaign or the variant's). To continue here from the run chosen: its
# <name>-last.pt and <name>-best.pt become the campaign's checkpoint-last.pt and checkpoint-best.pt, its
# runs.csv, metrics.csv and losses.csv the campaign's, and its settings go into campaign.json (docs/training.md).
#   device run:  bash bench/gpu_campaign.sh   (timeout 590 s; nothing to carry)
#   CPU smoke test on a small campaign folder: OUT=/tmp/s DEVICE=cpu PYTHON=.venv/bin/python MIN=0.3 \
#       CAMPAIGN=/tmp/c CACHE=/tmp/c-data BENCH_BATCH=4 BENCH_CONFIGS=campaign EVAL_EVERY=5 bash bench/gpu_campaign.sh
set -uo pipefail
cd "$(dirname "$0")/.."
R=${OUT:-/tmp/out}
RES=/tmp/res
rm -rf "$RES" && mkdir -p "$RES" "$R"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
CAMPAIGN=${CAMPAIGN:-campaigns/ecal25}
CACHE=${CACHE:-/tmp/campaign-data}
MIN=${MIN:-6}
EVAL_EVERY=${EVAL_EVERY:-600}
VARIANTS=${VARIANTS:-occ5:occupancy_weight=5|sf300:sf_weight=300|res20:res_weight=20}
BENCH_BATCH=${BENCH_BATCH:-32,256}
BENCH_CONFIGS=${BENCH_CONFIGS-fp32,bf16,campaign}
NCPU=$(nproc)
T0=$(date +%s)
stamp() { echo "[gpu_campaign +$(( $(date +%s) - T0 ))s] $*"; }
pack() { tar czf "$R/results.tgz.tmp" -C /tmp res 2>/dev/null && mv "$R/results.tgz.tmp" "$R/results.tgz"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; lscpu; nproc; free -g; } > "$RES/host.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$RES/torch.txt"

# 1. data on all cores but two, the step benchmark on the other two
PIN_SIM="" PIN_BENCH=""
if (( NCPU >= 8 )) && command -v taskset >/dev/null; then
    PIN_SIM="taskset -c 0-$((NCPU - 3))"; PIN_BENCH="taskset -c $((NCPU - 2))-$((NCPU - 1))"
fi
stamp "simulating the campaign's data into $CACHE"
# (a file with a main guard, not stdin: GFlash's worker processes are spawned and re-import the main script)
cat > "$RES/simulate_data.py" <<'EOF'
import sys, time
from pathlib import Path
from caloquant.train.campaign import ensure_data, load_campaign
if __name__ == "__main__":
    t = time.perf_counter()
    train, val = ensure_data(load_campaign(sys.argv[1]), Path(sys.argv[2]), progress=False)
    print(f"data ready in {time.perf_counter() - t:.1f} s:", *train, val)
EOF
$PIN_SIM "$PY" "$RES/simulate_data.py" "$CAMPAIGN" "$CACHE" > "$RES/simulate.log" 2>&1 &
SIM=$!
if [[ -n $BENCH_CONFIGS ]]; then  # BENCH_CONFIGS= skips the benchmark
    stamp "training-step benchmark ($BENCH_CONFIGS, batch $BENCH_BATCH)"
    timeout 120 $PIN_BENCH "$PY" bench/train_speed.py --device "$DEVICE" --configs "$BENCH_CONFIGS" --batch "$BENCH_BATCH" \
        --warmup 3 --steps 10 --threads 2 --markdown "$RES/train_speed_gpu.md" --json "$RES/train_speed_gpu.json" \
        > "$RES/train_speed_gpu.log" 2>&1
    stamp "benchmark exit $?"; tail -12 "$RES/train_speed_gpu.log"
fi
wait $SIM; rc=$?
stamp "simulation exit $rc"; cat "$RES/simulate.log"
pack
(( rc == 0 )) || { stamp "no data: stopping"; exit 1; }

# 2. the campaign and its variants side by side
names=(campaign) folders=("$CAMPAIGN")
IFS='|' read -r -a specs <<< "$VARIANTS"
for spec in "${specs[@]}"; do
    [[ -n $spec ]] || continue
    name=${spec%%:*} sets=${spec#*:}
    dir=/tmp/variant-$name
    rm -rf "$dir" && cp -r "$CAMPAIGN" "$dir"
    "$PY" - "$dir/campaign.json" "$sets" <<'EOF' || { stamp "variant $name: bad settings"; continue; }
import json, sys
from caloquant.train.loop import RETUNABLE
path, sets = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
for kv in sets.split(","):
    k, v = kv.split("=")
    if k not in RETUNABLE:  # any retunable setting, also one the campaign has left at its default
        raise SystemExit(f"{k} cannot be retuned on resume (only {', '.join(RETUNABLE)})")
    doc["config"][k] = json.loads(v)
doc["about"] = f"variant of the campaign for one run: {sets}"
json.dump(doc, open(path, "w"), indent=2)
EOF
    names+=("$name"); folders+=("$dir")
done
threads=$(( NCPU / ${#names[@]} )); (( threads >= 1 )) || threads=1
DMON=""
if command -v nvidia-smi >/dev/null; then nvidia-smi dmon -s um -d 10 > "$RES/dmon.txt" 2>&1 & DMON=$!; fi
pids=()
for k in "${!names[@]}"; do
    stamp "run ${names[$k]} (${folders[$k]}) for $MIN min, $threads threads"
    "$PY" -m caloquant.cli campaign "${folders[$k]}" --run-minutes "$MIN" --cache "$CACHE" --device "$DEVICE" \
        --threads "$threads" --eval-every "$EVAL_EVERY" --checkpoint-every "$EVAL_EVERY" --resident auto -q > "$RES/run-${names[$k]}.log" 2>&1 &
    pids+=($!)
done
for k in "${!pids[@]}"; do
    wait "${pids[$k]}"; stamp "${names[$k]} exit $?"; tail -3 "$RES/run-${names[$k]}.log"
done

[[ -n $DMON ]] && kill "$DMON" 2>/dev/null

# 3. bring everything back
for k in "${!names[@]}"; do
    d=${folders[$k]} n=${names[$k]}
    mkdir -p "$RES/$n"
    cp "$d"/*.csv "$d"/*.json "$d"/*.png "$RES/$n/" 2>/dev/null
    cp "$d/checkpoint-last.pt" "$R/$n-last.pt" 2>/dev/null
    cp "$d/checkpoint-best.pt" "$R/$n-best.pt" 2>/dev/null
    tail -2 "$d/runs.csv"
done
pack
stamp "done"
