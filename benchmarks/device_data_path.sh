#!/bin/bash
# The accelerator benchmark of the data path and the birds50 measurements on a GPU, as one prepared
# run (about 9 minutes on an H200). In order of importance, so that a run cut short fills the first:
#   1. beside everything, pinned to cores 0-1: benchmarks/contention.py (two jobs on two cores,
#      OpenMP spinning vs sleeping vs one thread), on a clean 2-core machine;
#   2. on cores 2-15 and the GPU: benchmarks/loop_vs_bare.py, ResNet-50 at 224 px, bf16, batch 64,
#      birds50: fgvc's loop with host / host+cache / device / device+cache augmentation vs the bare step;
#   3. benchmarks/device_aug_speed.py (device augmentation alone: ms per batch, host synchronisations);
#      seeds: the birds50_mnv2_imagenet recipe (study birds50_mnv2_seeds) with seeds 0,1,2, three
#      processes on the GPU through `--launcher local` (carry the submitit wheel);
#   4. open set: birds50_mnv2_openset (25 species) and `fgvc eval RUN --unknown heldout`;
#   5. if time is left: loop_vs_bare.py for ViT-B/16 (host vs device+cache);
#   6. if time is left: benchmarks/channels_last.py (NCHW vs channels-last steps: the GPU half of
#      train.channels_last=auto), then benchmarks/peak_memory.py (peak GPU memory, batch 16/32/64).
# Results are packed into $OUT every 20 s, so a run cut short still returns what finished.
# Usage (repository root): BIRDS50=DIR FGVC_WEIGHTS=DIR [WHEELS=DIR] [SMOKE=1] bash benchmarks/device_data_path.sh
# SMOKE=1: tiny settings on a CPU, to check the script itself. DEADLINE=S: skip steps that start after S s;
# HARD=S (default 560): the last two steps are killed at S s, keeping the rows they wrote.
set -u
source "$(dirname "$0")/device_env.sh"
RUNS=${RUNS:-/tmp/runs-device}
DEADLINE=${DEADLINE:-480}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE=32; BATCH=8; EPOCHS=1; WORKERS=0; SEC=3; PREC=32-true; G=""; CPUS=0
  SMALL=(data.image_size=32 train.epochs=1 data.num_workers=0)
else
  SIZE=224; BATCH=64; EPOCHS=2; WORKERS=12; SEC=20; PREC=bf16-mixed; G="taskset -c 2-$(( $(nproc) - 1 ))"; CPUS=0,1
  SMALL=()
fi

pack() {
  tar czf "$OUT/runs.tgz.tmp" $(find "$RUNS" \( -name metrics.json -o -name history.csv -o -name config.yaml \
    -o -name 'table*' -o -name 'eval_*.json' -o -name '*.png' \) 2>/dev/null) 2>/dev/null && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}
( while true; do sleep 20; pack; done ) & PACKER=$!
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( ${HARD:-560} - $(elapsed) > 10 ? ${HARD:-560} - $(elapsed) : 10 )); }  # s before HARD (the call's limit)
step() { echo "== $* ($(elapsed) s)" | tee -a "$OUT/log.txt"; }

step contention
$PY benchmarks/contention.py --cpus $CPUS --seconds $SEC --out "$OUT/contention.md" > "$OUT/contention.log" 2>&1 &
CONTENTION=$!

step "loop vs bare: resnet50"
$G $PY benchmarks/loop_vs_bare.py --root "$BIRDS50" --data cub200 --model resnet50 --size $SIZE --batch $BATCH \
  --precision $PREC --epochs $EPOCHS --workers $WORKERS --out "$OUT/loop_vs_bare.md" 2>&1 | grep -v "it/s\]" | tee -a "$OUT/log.txt"

step "device augmentation alone"
$G $PY benchmarks/device_aug_speed.py --size $SIZE --batch $BATCH 2>&1 | tee "$OUT/device_aug_speed.txt" | tee -a "$OUT/log.txt"

if [ "$(elapsed)" -lt "$DEADLINE" ]; then
  step "seeds: birds50_mnv2_seeds (the birds50_mnv2_imagenet recipe) x 0,1,2"
  $G $PY -m fgvc study birds50_mnv2_seeds --seeds 0,1,2 --launcher local --quiet --out "$RUNS" \
    data.root="$BIRDS50" data.num_workers=$(( WORKERS / 3 )) "${SMALL[@]}" 2>&1 | grep -v "it/s\]" | tee -a "$OUT/log.txt"
fi
if [ "$(elapsed)" -lt "$DEADLINE" ]; then
  step "open set: birds50_mnv2_openset"
  $G $PY -m fgvc train birds50_mnv2_openset --quiet data.root="$BIRDS50" data.num_workers=$WORKERS out="$RUNS/openset" \
    "${SMALL[@]}" 2>&1 | tail -12 | tee -a "$OUT/log.txt"
  for run in "$RUNS"/openset/*/; do
    $G $PY -m fgvc eval "$run" --unknown heldout 2>&1 | tail -25 | tee -a "$OUT/log.txt"
  done
fi
if [ "$(elapsed)" -lt "$DEADLINE" ]; then
  step "loop vs bare: vit_base_patch16_224"
  [ "${SMOKE:-0}" = 1 ] && VIT=resnet18 || VIT=vit_base_patch16_224
  $G $PY benchmarks/loop_vs_bare.py --root "$BIRDS50" --data cub200 --model $VIT --size $SIZE --batch $BATCH \
    --precision $PREC --epochs $EPOCHS --workers $WORKERS --settings host,device+cache --out "$OUT/loop_vs_bare.md" \
    2>&1 | grep -v "it/s\]" | tee -a "$OUT/log.txt"
fi
if [ "$(elapsed)" -lt "$DEADLINE" ]; then
  step "channels-last vs NCHW training step (decides train.channels_last=auto on a GPU)"
  [ "${SMOKE:-0}" = 1 ] && CL=(--model resnet18 --size 32 --batch 8) || CL=(--model resnet50,mobilenetv2_100,convnext_tiny --size 224 --batch 64)
  timeout $(left) $G $PY benchmarks/channels_last.py "${CL[@]}" 2>&1 | tee "$OUT/channels_last.md" | tee -a "$OUT/log.txt"
fi
if [ "$(elapsed)" -lt "$DEADLINE" ]; then
  step "peak GPU memory per backbone at batch 16/32/64"
  [ "${SMOKE:-0}" = 1 ] && PM=(--models resnet18 --batches 8 --size 32 --steps 2) || PM=()
  timeout $(left) $G $PY benchmarks/peak_memory.py "${PM[@]}" --out "$OUT/peak_memory.md" 2>&1 | tee -a "$OUT/log.txt"
fi
wait $CONTENTION
step done
kill $PACKER 2>/dev/null; pack
