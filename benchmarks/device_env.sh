# Sourced by the benchmarks/device_*.sh scripts (repository root): $OUT (created), the wheels in $WHEELS
# installed under /tmp/site when given, fgvc's source ($SRC, default src) on PYTHONPATH, $PY, and
# $OUT/machine.txt (GPU, driver, torch / timm / kornia versions, CPU model, core count).
OUT=${OUT:-/tmp/fgvc-device-out}; mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/${SRC:-src}${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FGVC_WEIGHTS
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
  $PY -c "import kornia; print('kornia', kornia.__version__)"
  lscpu | grep -m1 'Model name'; nproc; } > "$OUT/machine.txt" 2>&1
