#!/bin/bash
# Issue 18's transfer studies on a lent GPU, as one prepared run (about 9 minutes on an H200):
#   the pretraining source, trainable depth and training tricks with real MobileNetV2 weights
#   (TensorFlow Lite files) on birds50 at 224 px. Results (metrics, histories, tables, two
#   checkpoints) are packed into $OUT every 30 s, so a run cut short still returns what finished.
# Usage (repository root): BIRDS50=DIR FGVC_WEIGHTS=DIR [WHEELS=DIR] [SMOKE=1] bash benchmarks/device_birds50_mnv2.sh
# SMOKE=1 runs one row per study at 32 px for one epoch, to check the script on a CPU.
set -u
OUT=${OUT:-/tmp/fgvc-device-out}; mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FGVC_WEIGHTS
PY=${PY:-python3}
RUNS=${RUNS:-runs-device}
EXTRA=(data.root="$BIRDS50" data.num_workers=${WORKERS:-12})
ONLY=()
if [ "${SMOKE:-0}" = 1 ]; then EXTRA+=(data.image_size=32 train.epochs=1 data.num_workers=0); fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; lscpu | grep -m1 'Model name'; } > "$OUT/machine.txt" 2>&1

pack() {  # small files of every run and table, and the two checkpoints the CAM / FGSM checks need
  tar czf "$OUT/results.tgz.tmp" $(find "$RUNS" \( -name metrics.json -o -name history.csv -o -name config.yaml \
    -o -name classes.json -o -name 'table.*' -o -name curves.png \) 2>/dev/null) 2>/dev/null && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
  for row in geometric geometric_fgsm; do
    d="$RUNS/birds50_mnv2_tricks/$row"
    if [ -f "$d/metrics.json" ] && [ ! -f "$OUT/ckpt_$row.tgz" ]; then
      tar czf "$OUT/ckpt_$row.tgz" "$d/checkpoints/best.safetensors" "$d/config.yaml" "$d/classes.json" "$d/metrics.json"
    fi
  done
}
( while true; do sleep 30; pack; done ) & PACKER=$!

t0=$(date +%s)
for study in birds50_mnv2_source birds50_mnv2_tricks birds50_mnv2_depth; do
  [ "${SMOKE:-0}" = 1 ] && ONLY=(--only "$($PY -c "import yaml,sys;print(next(iter(yaml.safe_load(open('src/fgvc/configs/studies/$study.yaml'))['rows'])))")")
  echo "== $study ($(( $(date +%s) - t0 )) s)"
  $PY -m fgvc study "$study" "${EXTRA[@]}" --out "$RUNS" --quiet "${ONLY[@]}" 2>&1 | grep -v "^Using\|it/s\]" | tee -a "$OUT/log.txt"
done
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
kill $PACKER 2>/dev/null; pack
