#!/bin/bash
# The birds50 transfer studies on a GPU, as one prepared run (about 9 minutes on an H200):
#   the pretraining source, trainable depth and training tricks with real MobileNetV2 weights
#   (TensorFlow Lite files) on birds50 at 224 px. Results (metrics, histories, tables, two
#   checkpoints) are packed into $OUT every 30 s, so a run cut short still returns what finished.
# Usage (repository root): BIRDS50=DIR FGVC_WEIGHTS=DIR [WHEELS=DIR] [SMOKE=1] bash benchmarks/device_birds50_mnv2.sh
# DEADLINE=S stops the studies S seconds after they start (the packing follows).
# SMOKE=1 runs one row per study at 32 px for one epoch, to check the script on a CPU.
set -u
source "$(dirname "$0")/device_env.sh"
RUNS=${RUNS:-runs-device}
EXTRA=(data.root="$BIRDS50" data.num_workers=${WORKERS:-12})
if [ "${SMOKE:-0}" = 1 ]; then EXTRA+=(data.image_size=32 train.epochs=1 data.num_workers=0); fi

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
# rows in order of importance, so that a run cut short still fills the leading rows of every table
PLAN=("birds50_mnv2_source scratch,imagenet,inat_birds"
      "birds50_mnv2_tricks baseline,geometric,label_smoothing,mixup,geometric+ls,geometric+ls+mixup"
      "birds50_mnv2_depth head,head+blocks:1,head+blocks:2,head+blocks:4,all,all_bn_frozen,all_bn_placeholder"
      "birds50_mnv2_tricks baseline_seed1,geometric_seed1,geometric+ls_seed1,geometric_fgsm"
      "birds50_mnv2_depth all_lr1e-4,all_lr2e-3")
for item in "${PLAN[@]}"; do
  study=${item% *}; rows=${item#* }
  [ "${SMOKE:-0}" = 1 ] && rows=${rows%%,*}
  echo "== $study $rows ($(( $(date +%s) - t0 )) s)" | tee -a "$OUT/log.txt"
  left=$(( ${DEADLINE:-100000} - ($(date +%s) - t0) ))
  [ $left -le 10 ] && break
  timeout $left $PY -m fgvc study "$study" "${EXTRA[@]}" --out "$RUNS" --quiet --only "$rows" 2>&1 | grep -v "^Using\|it/s\]" | tee -a "$OUT/log.txt"
done
echo "studies $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
# loop vs bare step at 224 px, resnet50, bf16, if time is left
if [ "${SMOKE:-0}" != 1 ] && [ $(( $(date +%s) - t0 )) -lt ${LOOP_BENCH_BEFORE:-440} ]; then
  timeout 100 $PY benchmarks/loop_overhead.py --root "$BIRDS50" --model resnet50 --size 224 --batch 64 \
    --workers 12 --epochs 2 2>&1 | grep -v "it/s\]" | tail -20 | tee -a "$OUT/log.txt"
  cp benchmarks/results/loop_overhead.md "$OUT/loop_overhead.md"
fi
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
kill $PACKER 2>/dev/null; pack
