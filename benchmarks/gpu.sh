#!/usr/bin/env bash
# GPU benchmarks for a lent H100/H200: paper preset, bf16 -> training images/s of MedMoE and of a
# Swin-T global-loss-only model, encode_image images/s, peak memory, then the same with the backbone and
# text encoder compiled (torch.compile, bf16): the compiled speed-ups. Installs nothing from the network.
#
#   here, once:   bash benchmarks/gpu.sh --prepare      (copies the tokenizer to .gpu/, which `run` carries)
#   GPU machine:  bash benchmarks/gpu.sh                (JSON to $OUT/gpu.json, log to $OUT/gpu.log)
#   CPU check:    bash benchmarks/gpu.sh --device cpu --preset tiny --steps 2 --warmup 1 --batch 4
#
# Extra arguments go to benchmarks/gpu.py. Records: benchmarks/RESULTS.md, with the device name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" = "--prepare" ]; then
    exec "$PY" benchmarks/gpu.py --save-tokenizer .gpu/tokenizer
fi
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
TOKENIZER=()
if [ -d .gpu/tokenizer ]; then TOKENIZER=(--tokenizer .gpu/tokenizer); fi
PYTHONUNBUFFERED=1 timeout 450 "$PY" benchmarks/gpu.py "${TOKENIZER[@]}" --compile --out "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
