#!/usr/bin/env bash
# One prepared device run (issues 12-14), about 8 minutes on one H200 with 16 cores:
#   1. the training-step benchmark on the GPU (bench/train_speed.py: before vs fp32 vs bf16, batch 128-1024);
#   2. bench/gpu_train.sh MIN with three ecal25 variants side by side: fine-tune the shipped generator (lr 1e-3
#      and 3e-4) and train from scratch, each with an EMA generator and FPD model selection; validation of
#      each against 10,000 independent MC showers;
#   3. while the GPU trains, on the host CPU: the OpenVINO BF16 per-op repro under several ISA caps (when
#      bench/prepare_device.sh has made scratch/ov and scratch/ecal25_ir) and the CPU training-step benchmark.
# Results come back in $OUT: results.tgz (logs, tables, metrics, curves), run-K.pt (best generators),
# ckpt-K.pt (last checkpoints of the two fine-tuning runs, to resume).
#   device run:  bash bench/gpu_session.sh   (carry: scratch; timeout 595 s)
#   CPU smoke test:  OUT=/tmp/s DEVICE=cpu MIN=0.05 PYTHON=.venv/bin/python BENCH_BATCH=2 BENCH_CONFIGS=fp32 \
#                    NTRAIN=300 NVAL=100 NREF=200 SHARDS=1 BATCH=4 EVAL_EVERY=2 bash bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
R=${OUT:-/tmp/out}
RES=/tmp/res
mkdir -p "$RES"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MIN=${MIN:-4}
BENCH_BATCH=${BENCH_BATCH:-128,256,1024}
BENCH_CONFIGS=${BENCH_CONFIGS:-before,fp32,bf16}
T0=$(date +%s)
stamp() { echo "[session +$(( $(date +%s) - T0 ))s] $*"; }
pack() { tar czf "$R/results.tgz.tmp" -C /tmp res 2>/dev/null && mv "$R/results.tgz.tmp" "$R/results.tgz"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; lscpu; nproc; free -g; } > "$RES/host.txt" 2>&1
grep -o -w -E 'avx512_bf16|amx_bf16|amx_int8|avx512_vnni|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ' | tee "$RES/isa.txt"; echo
"$PY" -c "import torch; print('torch', torch.__version__)"
HAVE_OV=0; [[ -e scratch/ov/openvino-cp312.tar.xz && -e scratch/ecal25_ir/model.xml ]] && HAVE_OV=1
UNTAR=""
if (( HAVE_OV )); then (mkdir -p /tmp/ov && tar xJf scratch/ov/openvino-cp312.tar.xz -C /tmp/ov) & UNTAR=$!; fi

stamp "GPU training-step benchmark"
timeout 150 "$PY" bench/train_speed.py --device "$DEVICE" --configs "$BENCH_CONFIGS" --batch "$BENCH_BATCH" \
    --warmup 3 --steps 10 --markdown "$RES/train_speed_gpu.md" --json "$RES/train_speed_gpu.json" \
    2>&1 | tee "$RES/train_speed_gpu.log"
pack

stamp "gpu_train.sh $MIN"
DEVICE=$DEVICE EVAL_EVERY=${EVAL_EVERY:-250} BATCH=${BATCH:-256} \
TRAIN_ARGS="--init-generator ecal25 --ema 0.998 --select fpd|--init-generator ecal25 --ema 0.998 --select fpd --lr 3e-4|--ema 0.998 --select fpd" \
    bench/gpu_train.sh "$MIN" /tmp/gt > "$RES/gpu_train.log" 2>&1 &
GT=$!

# CPU-side checks once the trainings have started (the simulations are done by then)
while kill -0 $GT 2>/dev/null && ! ls /tmp/gt/run-0.log >/dev/null 2>&1; do sleep 2; done
sleep 20
PIN=""; [[ $(nproc) -ge 16 ]] && command -v taskset >/dev/null && PIN="taskset -c 10-15"
if (( HAVE_OV )); then
    stamp "OpenVINO BF16 per-op repro on the host CPU"
    wait "$UNTAR"
    for caps in "" AVX512_CORE_BF16 AVX512_CORE_VNNI; do
        if [[ -n $caps ]]; then export ONEDNN_MAX_CPU_ISA=$caps OV_CPU_MAX_ISA=$caps; fi
        PYTHONPATH=/tmp/ov timeout 90 $PIN "$PY" bench/bf16_isa_repro.py --xml scratch/ecal25_ir/model.xml \
            > "$RES/repro-${caps:-none}.txt" 2>&1
        tail -1 "$RES/repro-${caps:-none}.txt"
        unset ONEDNN_MAX_CPU_ISA OV_CPU_MAX_ISA
    done
    pack
fi
stamp "CPU training-step benchmark (6 cores)"
cpu_cfg=before; grep -q -E 'avx512_bf16|amx_bf16' "$RES/isa.txt" && cpu_cfg=before,bf16
timeout 150 $PIN "$PY" bench/train_speed.py --device cpu --configs "$cpu_cfg" --batch 32 --warmup 1 --steps 2 \
    --threads 6 --markdown "$RES/train_speed_cpu.md" 2>&1 | tee "$RES/train_speed_cpu.log"
pack

collect() {
    for k in 0 1 2; do
        d=/tmp/gt/run-$k
        mkdir -p "$RES/run-$k"
        cp $d/losses.csv $d/metrics.csv $d/generator-best.json $d/curves.png "$RES/run-$k/" 2>/dev/null
        cp /tmp/gt/run-$k.log /tmp/gt/run-$k.args "$RES/" 2>/dev/null
        cp $d/generator-best.pt "$R/run-$k.pt" 2>/dev/null
    done
    for k in 0 1; do cp /tmp/gt/run-$k/checkpoint-last.pt "$R/ckpt-$k.pt" 2>/dev/null; done
    cp /tmp/gt/validate.json /tmp/gt/summary.txt "$RES/" 2>/dev/null
    pack
}
while kill -0 $GT 2>/dev/null && ! grep -q "generating at the reference" "$RES/gpu_train.log"; do sleep 3; done
stamp "trainings over: collecting weights"; collect
wait $GT; stamp "gpu_train.sh exit $?"
collect
tail -45 "$RES/gpu_train.log"
stamp "done"
