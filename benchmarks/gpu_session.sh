#!/usr/bin/env bash
# One GPU session's measurements, in order of priority, inside a fixed time (docs/benchmark.md,
# "On a GPU"). Run from the repository root on a machine with a CUDA GPU:
#
#     OUT=gpu_results BUDGET_S=480 bash benchmarks/gpu_session.sh
#
# 1. the gpu-marked tests; 2. the default protocol case with its correction round (barrel,
# SNR 0.1) and round 1 of the other two classes; 3. detection of a 1024x1024x500 tomogram;
# 4. the ablations only a GPU makes cheap: 4x the schedule (ours and the supervised ceiling),
# then 4x the schedule with the wider 3D U-Net. Each step runs only while time is left and is
# cut at what is left; results are JSON lines in $OUT/gpu.jsonl, logs in $OUT/*.log.
# DRY=1 runs the same steps on a small volume with a few steps (to check the script on a CPU).
set -u
OUT=${OUT:-gpu_results}
BUDGET_S=${BUDGET_S:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CACHE=${CACHE:-/tmp/cetpick_gpu_cache}
SMALL=()
MEM=()
LONG=1200
if [ "${DRY:-0}" = 1 ]; then SMALL=(--shape 64 192 192); MEM=(--memory-shape 64 256 256); LONG=20; fi
B=("$PY" benchmarks/run_benchmark.py --cache "$CACHE" --out "$OUT/gpu.jsonl" "${SMALL[@]}")

step() {  # step NAME CAP_S command...
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET_S - SECONDS))
    if [ "$left" -lt 20 ]; then echo "skip $name: ${left}s left" | tee -a "$OUT/steps.log"; return; fi
    [ "$cap" -gt "$left" ] && cap=$left
    local t0=$SECONDS
    timeout "$cap" "$@" >"$OUT/$name.log" 2>&1
    echo "$name rc=$? $((SECONDS - t0))s (cap ${cap}s)" | tee -a "$OUT/steps.log"
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc) >"$OUT/machine.txt" 2>&1
step tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
if [ "${DRY:-0}" = 1 ]; then
    step default_barrel 600 "${B[@]}" --snr 0.1 --classes proteasome --methods ours --rounds 2 --steps 20 --tag gpu_default
else
    step default_barrel 150 "${B[@]}" --snr 0.1 --classes proteasome --methods ours --rounds 2 --tag gpu_default
fi
step default_others 120 "${B[@]}" --snr 0.1 --classes shell ribosome --methods ours --rounds 1 --steps "$((LONG / 4))" --tag gpu_default
step memory 90 "${B[@]}" --memory "${MEM[@]}"
step steps_long 150 "${B[@]}" --snr 0.1 --classes proteasome --methods ours supervised --rounds 1 --steps "$LONG" --tag "gpu_steps$LONG"
step unet3d_long 150 "${B[@]}" --snr 0.1 --classes proteasome --methods ours --rounds 1 --steps "$LONG" --set arch=unet3d --tag "gpu_unet3d_steps$LONG"
echo "total ${SECONDS}s" | tee -a "$OUT/steps.log"
