#!/usr/bin/env bash
# The comparison on one GPU, under JAX and torch, without TensorFlow, in one call of about 6 minutes.
#
#   bash benchmarks/gpu_check.sh OUT          # GPU machine: gpt2_base_en, random weights
#   bash benchmarks/gpu_check.sh --cpu OUT    # the same steps here on the CPU, gpt2_tiny
#
# With the device tool, from the repository root, the wheels carried along (they are ignored by
# git; 5 MB):
#
#   run(command='bash benchmarks/gpu_check.sh "$OUT"', carry=[".whl"], timeout_s=450)
#
# OUT must not hold earlier results; the script writes there:
#   compare-jax-xla/      --backend jax --jit-compile, modes full,lora,keras_lora (each its own
#   compare-torch/        --backend torch, modes full,lora,keras_lora  folder with results.json,
#   levers-torch/         torch, lora,dora --frozen-dtype bfloat16 --remat --chunked-loss
#   compare-jax-qlora-dora/, levers-jax-xla/   extras, run only while the time budget lasts:
#   levers-jax-remat/     jax, lora --jit-compile --frozen-dtype bfloat16 --remat --chunked-loss
#   frozen-float16-jax/   jax, lora --jit-compile --frozen-dtype float16 (what a T4 runs), beside
#                         levers-jax-xla's bfloat16
#   environment.txt       GPU, versions;  gpu_check.log  everything printed
#
# The GPU machine has Python 3.12, JAX (CUDA), torch (CUDA), numpy, matplotlib, psutil, h5py, rich,
# absl-py, regex, packaging, ml-dtypes, tokenizers, requests, pyyaml and tqdm, but no Keras,
# KerasHub, kagglehub, TensorFlow nor network. What lora_keras lacks there is installed from the
# wheels in .whl/, downloaded beforehand with:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl keras==3.15.1 keras-hub==0.32.0 kagglehub==1.0.2 \
#       kagglesdk==0.1.28 namex==0.1.0 optree==0.20.0 protobuf==7.36.2
#
# (protobuf: kagglesdk imports it.) TensorFlow is not needed: lora_keras reads the embedded corpus
# as a list, tokenizes with KerasHub's Python path and feeds NumPy batches (see
# lora_keras/data/optional_tensorflow.py). GPU_CHECK_BUDGET_S (default 360) bounds the runs' time;
# GPU_CHECK_STAGES="compare-torch levers-torch" runs only the stages named (a rerun).
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=False  # also read by Python below
if [ "${1:-}" = "--cpu" ]; then
    cpu=True
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: bash $0 [--cpu] OUT   (OUT: a folder for the results; see the top of $0)" >&2
    exit 2
fi
out=$1
python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-360}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu_check.log") 2>&1

site=${GPU_CHECK_SITE:-/tmp/site}
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing=$("$python" - <<'PY'
import importlib.util


def missing(module):
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # google.protobuf, without any google package
        return True


modules = ("keras", "keras_hub", "kagglehub", "kagglesdk", "namex", "optree", "google.protobuf")
print(" ".join(module for module in modules if missing(module)))
PY
)
if [ -n "$missing" ]; then
    if ! ls .whl/*.whl > /dev/null 2>&1; then
        echo "gpu_check: missing Python modules: $missing; no wheels in .whl/ to install them" >&2
        echo "from (see the top of $0)." >&2
        exit 2
    fi
    echo "gpu_check: installing into $site, from .whl/ (no network): $missing"
    "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
        .whl/*.whl
fi

if [ "$cpu" = True ]; then
    export JAX_PLATFORMS=cpu
    preset=gpt2_tiny
else
    if ! "$python" -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null
    then
        devices=$("$python" -c 'import jax; print(jax.devices())' 2>&1 | tail -1)
        echo "gpu_check: JAX sees no GPU (jax.devices(): $devices)." >&2
        echo "Install a CUDA build of jax, or run with --cpu to check the steps here." >&2
        exit 2
    fi
    preset=gpt2_base_en
fi

KERAS_BACKEND=jax "$python" - > "$out/environment.txt" 2>&1 <<'PY' || true
import importlib, platform, subprocess, sys
print("python", platform.python_version(), platform.machine())
for name in ("jax", "jaxlib", "torch", "keras", "keras_hub", "numpy", "tokenizers"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError as error:
        print(name, "not importable:", error)
print("tensorflow importable:", importlib.util.find_spec("tensorflow") is not None)
import jax
print("jax devices:", jax.devices())
try:
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
except FileNotFoundError:
    print("no nvidia-smi")
PY
cat "$out/environment.txt"

# One comparison a stage, each run in its own process (lora_keras does that) with its own
# timeout; a stage gets at most its share of what is left of the budget, and is skipped when too
# little is left. The required stages come first.
failed=0
REQUIRED="compare-jax-xla compare-torch levers-torch"  # skipped for lack of time: a failure
stage() {  # name, backend, most seconds, seconds a run, modes, extra flags...
    local name=$1 backend=$2 most=$3 per_run=$4 modes=$5
    shift 5
    if [ -n "${GPU_CHECK_STAGES:-}" ] && [[ " $GPU_CHECK_STAGES " != *" $name "* ]]; then
        return  # not among the stages asked for
    fi
    local left=$((budget - SECONDS))
    local limit=$((most < left ? most : left))
    if [ "$limit" -lt "$per_run" ]; then
        echo "gpu_check: $name skipped: ${left} s of the ${budget} s budget left"
        [[ " $REQUIRED " != *" $name "* ]] || failed=1
        return
    fi
    echo "gpu_check: $name (--backend $backend --modes $modes $*), at most ${limit} s"
    local status=0
    timeout --kill-after=20 "$limit" "$python" -m lora_keras.cli compare --preset "$preset" \
        --weights random --backend "$backend" --modes "$modes" --timeout "$per_run" \
        --out "$out/$name" "$@" || status=$?
    echo "gpu_check: $name exit status $status"
    [ "$status" -eq 0 ] || failed=1
}

# JAX compiles its steps with XLA (Keras's own default there); compare's default is off.
stage compare-jax-xla jax 200 100 full,lora,keras_lora --jit-compile
if "$python" -c "import torch, sys; sys.exit(not ($cpu or torch.cuda.is_available()))" 2>/dev/null
then
    stage compare-torch torch 130 80 full,lora,keras_lora
    stage levers-torch torch 100 60 lora,dora --frozen-dtype bfloat16 --remat --chunked-loss
else
    echo "gpu_check: compare-torch skipped: torch is not installed or sees no GPU"
    [ "$cpu" = True ] || failed=1  # on a CPU, a Python without torch still checks JAX
fi
stage compare-jax-qlora-dora jax 120 70 qlora,dora --jit-compile
stage levers-jax-xla jax 100 70 lora --frozen-dtype bfloat16 --chunked-loss --jit-compile
stage levers-jax-remat jax 100 70 lora --frozen-dtype bfloat16 --remat --chunked-loss --jit-compile
stage frozen-float16-jax jax 80 60 lora --frozen-dtype float16 --jit-compile

echo "gpu_check: done in ${SECONDS} s; results in $out"
exit "$failed"
