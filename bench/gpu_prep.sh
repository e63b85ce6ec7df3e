#!/usr/bin/env bash
# Prepare here, once, what bench/gpu.sh needs on a lent GPU machine, in .gpu/ (ignored by git):
#
#   bash bench/gpu_prep.sh /path/to/train_controlnet.py      # diffusers' example, at the installed tag
#   then, with the device tool:  run  command="bash bench/gpu.sh"  carry=[".gpu"]
#
# The GPU machine reaches no package index and holds no diffusers (its image: Python 3.12, PyTorch,
# transformers, accelerate, pyarrow, pandas, tensorboard ... but no diffusers, datasets, SQLAlchemy,
# pydantic). So .gpu/ gets:
#   wheels/                 the packages the benchmarks import that the image lacks, at the
#                           versions installed here, for CPython 3.12 on x86-64 Linux;
#   train_controlnet.py     diffusers' example, the training baseline;
#   train/export-512/       the demo dataset exported as an image folder at 512 px (built here:
#                           the SD 1.5 random-weight model is built on the GPU machine, from configs).
# It all stays under the device tool's 64 MiB. gpu.sh installs the wheels into /tmp/site there.
# GPU_PREP_8BIT=1 adds bitsandbytes (8-bit AdamW's memory) and leaves the export to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLE="${1:-${DIFFUSERS_EXAMPLE:-}}"
if [ -z "$EXAMPLE" ] || [ ! -f "$EXAMPLE" ]; then
  echo "usage: bash bench/gpu_prep.sh PATH/train_controlnet.py (diffusers' examples/controlnet/train_controlnet.py," >&2
  echo "       e.g. git -C <diffusers clone> show v<version>:examples/controlnet/train_controlnet.py > FILE)" >&2
  exit 2
fi
PY="${PYTHON:-python}"
PREP=.gpu
mkdir -p .git/info
grep -qxF "/$PREP/" .git/info/exclude 2>/dev/null || echo "/$PREP/" >> .git/info/exclude
rm -rf "$PREP/wheels"
mkdir -p "$PREP/wheels" "$PREP/train"
cp "$EXAMPLE" "$PREP/train_controlnet.py"

download() {  # download ARGS...: wheels for CPython 3.12 on x86-64 Linux (the image's Python) into .gpu/wheels
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$PREP/wheels" "$@"
}

# What the GPU benchmarks import (bench/train.py and its runs of both trainers, bench/generate.py,
# bench/segment.py) and the image lacks, found by listing the distributions of every module those
# runs loaded here, less the image's packages (the device tool's KINDS.md): each at the version
# installed here. The image's own transformers, huggingface-hub, tokenizers, accelerate, pyarrow
# and tensorboard are kept (a newer transformers would pull in a newer hub and its HTTP stack);
# typer is carried because workbench.cli needs 0.29's vendored click.
PACKAGES=(diffusers datasets dill multiprocess sqlalchemy alembic mako pydantic pydantic-core annotated-types
          typing-inspection pydantic-settings python-dotenv bcrypt typer ijson open-clip-torch ftfy wcwidth)
for name in "${PACKAGES[@]}"; do
  download "$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
done

if [ "${GPU_PREP_8BIT:-0}" = 1 ]; then
  # 8-bit AdamW's memory figure needs bitsandbytes (43 MB): with it the export no longer fits beside
  # the wheels, so bench/train.py builds it on the GPU machine instead (about a minute there)
  download bitsandbytes
  rm -rf "$PREP/train"
else
  # The training export, where bench/train.py --gpu --workdir .gpu/train looks for it.
  "$PY" bench/train.py --gpu --prepare-only --diffusers-example "$PREP/train_controlnet.py" --workdir "$PREP/train"
  rm -rf "$PREP/train/data" "$PREP/train/hf-datasets"  # the store and caches it was made from
fi
du -sh "$PREP"/* | sed 's/^/  /'
echo "ready: $(du -sm "$PREP" | cut -f1) MiB in $PREP (the device tool carries at most 64 MiB)"
