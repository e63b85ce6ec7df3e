#!/usr/bin/env bash
# Every GPU figure of the project in one prepared run (under 8 minutes on an H100/H200-class card).
#
#   DIFFUSERS_EXAMPLE=/path/to/train_controlnet.py bash bench/gpu.sh [WORKDIR]
#
# DIFFUSERS_EXAMPLE: diffusers' examples/controlnet/train_controlnet.py, unmodified, at the tag of the
# installed diffusers (`git -C <diffusers clone> show v<version>:examples/controlnet/train_controlnet.py`).
# Each part has its own time limit, so that one slow part cannot eat the others' time.
set -u
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d -t bench-gpu-XXXX)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python || command -v python3)}"  # a CUDA image may have only python3
status=0
started=$SECONDS

part() {  # part NAME SECONDS COMMAND...: run one part under its time limit, report and go on
  local name="$1" limit="$2"; shift 2
  echo "=== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "=== $name: stopped at its ${limit}s limit"
  [ $rc -ne 0 ] && status=1
  echo "=== $name: exit $rc after $((SECONDS - started))s in all"
}

# -- training (bench/train.py --gpu): SD 1.5 architecture at 512 px, fp16 and bf16, against diffusers' example
if [ -n "${DIFFUSERS_EXAMPLE:-}" ] && [ -f "$DIFFUSERS_EXAMPLE" ]; then
  part training 365 "$PY" bench/train.py --gpu --diffusers-example "$DIFFUSERS_EXAMPLE" \
    --workdir "$WORK/train" --budget-s 260
else
  echo "=== training: skipped; set DIFFUSERS_EXAMPLE to diffusers' examples/controlnet/train_controlnet.py"
  status=1
fi

# -- generation (bench/generate.py --gpu): slot for the generation engineer's benchmark
if [ -f bench/generate.py ]; then
  part generation 70 "$PY" bench/generate.py --gpu
else
  echo "=== generation: bench/generate.py does not exist yet; skipped"
fi

# -- segmentation (bench/segment.py --gpu): slot for the cloth segmenter's benchmark
if [ -f bench/segment.py ]; then
  part segmentation 45 "$PY" bench/segment.py --gpu --images 96
else
  echo "=== segmentation: bench/segment.py does not exist yet; skipped"
fi

echo "=== all GPU figures in $((SECONDS - started))s"
exit $status
