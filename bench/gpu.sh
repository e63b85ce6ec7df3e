#!/usr/bin/env bash
# Every GPU figure of the project in one prepared run (under 8 minutes on an H100/H200-class card).
#
#   bash bench/gpu_prep.sh PATH/train_controlnet.py     # here, once: .gpu/ (wheels, baseline, export)
#   bash bench/gpu.sh [WORKDIR]                          # there: the device tool's run, carry [".gpu"]
#   DIFFUSERS_EXAMPLE=/path/to/train_controlnet.py bash bench/gpu.sh [WORKDIR]   # a machine with the packages
#
# DIFFUSERS_EXAMPLE: diffusers' examples/controlnet/train_controlnet.py, unmodified, at the tag of the
# installed diffusers (`git -C <diffusers clone> show v<version>:examples/controlnet/train_controlnet.py`);
# default .gpu/train_controlnet.py. With .gpu/wheels, those packages are installed into /tmp/site first,
# and the training export is the one in .gpu/train.
# Each part has its own time limit, so that one slow part cannot eat the others' time.
set -u
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d -t bench-gpu-XXXX)}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python || command -v python3)}"  # a CUDA image may have only python3
TRAIN_WORK="$WORK/train"
if [ -d .gpu ]; then
  if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .gpu/wheels/*.whl || { echo "=== the wheels in .gpu/wheels did not install"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -f .gpu/train_controlnet.py ] && DIFFUSERS_EXAMPLE="${DIFFUSERS_EXAMPLE:-.gpu/train_controlnet.py}"
  [ -d .gpu/train ] && TRAIN_WORK="$PWD/.gpu/train"
fi
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
    --workdir "$TRAIN_WORK" --budget-s 260
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
