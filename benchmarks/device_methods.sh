#!/bin/bash
# The FGVC methods study on a GPU at 224 and 448 px, as one prepared run of under ten minutes:
# `fgvc study birds50_methods_full` (MobileNetV2 from the ImageNet TensorFlow Lite file, every layer,
# 12 epochs, iSQRT-COV and PMG with their authors' head factors, flip TTA, ECE and FGSM per run, paired
# differences to plain), seeds 0, 1, 2 as three processes on the GPU (`--launcher local`; carry the
# submitit wheel). Steps in order of importance, so that a run cut short fills the first:
#   1. 224 px: plain and iSQRT-COV;   2. 448 px (aug.random_crop): plain and iSQRT-COV;
#   3. 224 px: CAL and WS-DAN;        4. 448 px: CAL;   5. 224 px: PMG, API-Net, bilinear.
# Results (metrics, histories, eval and attack JSON, the tables and their plots; no per-run images) are
# packed into $OUT every 20 s, so a run cut short still returns what finished.
# Usage (repository root): BIRDS50=DIR FGVC_WEIGHTS=DIR [WHEELS=DIR] [SMOKE=1] bash benchmarks/device_methods.sh
# SMOKE=1: 32 px, one epoch, one seed, sequential, on a CPU, to check the script itself (SEEDS=0,1
# LAUNCHER=local checks the parallel launch too). DEADLINE=S (default 420): no step starts after S s;
# HARD=S (default 560): a running step is stopped at S s, keeping what finished.
set -u
source "$(dirname "$0")/device_env.sh"
RUNS=${RUNS:-/tmp/runs-device}
DEADLINE=${DEADLINE:-420}
HARD=${HARD:-560}
if [ "${SMOKE:-0}" = 1 ]; then
  SEEDS=${SEEDS:-0}; SMALL=(train.epochs=1 data.num_workers=0); S224=32; S448=48
else
  SEEDS=${SEEDS:-0,1,2}; SMALL=(data.num_workers=4); S224=224; S448=448
fi
LAUNCH=(--launcher "${LAUNCHER:-$([ "${SMOKE:-0}" = 1 ] && echo sequential || echo local)}")

pack() {
  tar czf "$OUT/runs.tgz.tmp" $(find "$RUNS" \( -name metrics.json -o -name history.csv -o -name config.yaml \
    -o -name 'table*' -o -name 'eval_*.json' -o -path '*/attack/*.json' \) 2>/dev/null) 2>/dev/null \
    && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}
( while true; do sleep 20; pack; done ) & PACKER=$!
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( HARD - $(elapsed) > 10 ? HARD - $(elapsed) : 10 )); }

study() {  # study SIZE ROWS [key=value ...]: the rows at one size, every seed, unless the deadline has passed
  local size=$1 rows=$2; shift 2
  if [ "$(elapsed)" -ge "$DEADLINE" ]; then echo "== skipped: $rows at $size px (deadline)" | tee -a "$OUT/log.txt"; return; fi
  echo "== $rows at $size px ($(elapsed) s)" | tee -a "$OUT/log.txt"
  timeout "$(left)" $PY -m fgvc study birds50_methods_full --only "$rows" --seeds $SEEDS "${LAUNCH[@]}" --quiet \
    --out "$RUNS/$size" data.root="$BIRDS50" data.image_size=$size "${SMALL[@]}" "$@" 2>&1 \
    | grep -v "it/s\]" | tee -a "$OUT/log.txt"
}

study $S224 plain,isqrt_cov
study $S448 plain,isqrt_cov aug.random_crop=true
study $S224 cal,wsdan
study $S448 cal aug.random_crop=true
study $S224 pmg,api_net,bilinear
echo "== done ($(elapsed) s)" | tee -a "$OUT/log.txt"
kill $PACKER 2>/dev/null; pack
