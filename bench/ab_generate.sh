#!/usr/bin/env bash
# A/B generation speed of this tree against another commit, end to end (`caloquant generate`: inference, decoding
# and the HDF5 file), on this machine, in interleaved rounds, so that the ratio is measured in one run.
#
#   bash bench/ab_generate.sh BASE_REV [MODEL] [PRECISION ...]     # defaults: ecal25, fp32 int8
#
# BASE_REV is checked out in a temporary git worktree and run with this tree's virtual environment. A first
# call per tree and precision builds its exports and INT8 model into the cache (not timed). Prints the showers/s
# of each round and the median ratio this/base per precision. Run it on an idle machine.
set -euo pipefail
base=${1:?BASE_REV}; model=${2:-ecal25}; shift $(( $# > 1 ? 2 : 1 ))
precs=("${@:-fp32}"); [ $# -eq 0 ] && precs=(fp32 int8)
n=${N:-4096}; rounds=${ROUNDS:-3}; py=${PYTHON:-$PWD/.venv/bin/python}
tmp=$(mktemp -d); wt=$tmp/base
git worktree add -q --detach "$wt" "$base"
trap 'git worktree remove --force "$wt"; rm -rf "$tmp"' EXIT
rate() {  # tree precision count -> showers/s
  PYTHONPATH=$1/src "$py" -m caloquant.cli generate --model "$model" --precision "$2" --n "$3" --energy 10:500 \
    -o "$tmp/out.h5" --overwrite 2>&1 | sed -n 's/.* \([0-9.]*\) showers\/s).*/\1/p' | tail -1
}
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $model, $n showers per round, base $base"
for p in "${precs[@]}"; do rate "$wt" "$p" 256 >/dev/null; rate "$PWD" "$p" 256 >/dev/null; done
for p in "${precs[@]}"; do
  a=(); b=()
  for _ in $(seq "$rounds"); do a+=("$(rate "$wt" "$p" "$n")"); b+=("$(rate "$PWD" "$p" "$n")"); done
  "$py" - "$p" "${a[*]}" "${b[*]}" <<'PY'
import statistics, sys
p, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{p}: base {ma:.0f} showers/s (rounds {', '.join(f'{x:.0f}' for x in a)}), this {mb:.0f} "
      f"(rounds {', '.join(f'{x:.0f}' for x in b)}): {mb / ma:.2f}x")
PY
done
