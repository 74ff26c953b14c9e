#!/usr/bin/env bash
# Prepare what bench/gpu_session.sh carries to a lent GPU machine besides the checkout (run here, once):
#   scratch/ov/openvino-cp312.tar.xz  OpenVINO for the device's Python 3.12, CPU plugin and IR reader only
#                                     (the wheel is 56 MB, over what a run carries; slimmed and xz'd: about 20 MB)
#   scratch/ecal25_ir/                the shipped generator's IR and input batch for bench/bf16_isa_repro.py
# Needs the project's .venv (make setup) and the package registry. scratch/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OV_VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('openvino'))")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp/whl" "openvino==$OV_VERSION"
(cd "$tmp" && mkdir x && cd x && unzip -q ../whl/openvino-*.whl \
    && rm -f openvino/libs/libopenvino_intel_{gpu,npu}_plugin.so \
             openvino/libs/libopenvino_{gguf,jax,onnx,paddle,pytorch,tensorflow,tensorflow_lite}_frontend.so.*)
mkdir -p scratch/ov
tar cJf scratch/ov/openvino-cp312.tar.xz -C "$tmp/x" .
"$PY" bench/bf16_isa_repro.py --export scratch/ecal25_ir
ls -la scratch/ov scratch/ecal25_ir
