#!/usr/bin/env bash
# The default comparison on one GPU with the JAX backend, in one call of under 5 minutes.
#
#   bash benchmarks/gpu_check.sh           # on a GPU machine: writes benchmarks/results/compare-gpu-jax
#   bash benchmarks/gpu_check.sh --cpu     # the same steps on a CPU, tiny model, into a temp folder
#
# A GPU machine may have no network: what it lacks is installed from wheels in `.whl/` (ignored
# by git), downloaded beforehand on a machine with the network, for the GPU machine's Python and
# platform (all of requirements.txt and their dependencies):
#
#   pip download -d .whl --only-binary=:all: --python-version 3.11 \
#       --platform manylinux_2_28_x86_64 -r requirements.txt
#
# TensorFlow is among them: lora_keras still needs it under JAX for its data pipeline (tf.data in
# load_texts and make_lm_datasets, the tokenizer's Dataset check) and for TFDS. The training and
# the measurement run on JAX.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=false
[ "${1:-}" = "--cpu" ] && cpu=true
export KERAS_BACKEND=jax PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

missing=$(python - <<'PY'
import importlib.util
modules = ("jax", "keras", "keras_hub", "tokenizers", "tensorflow", "psutil", "matplotlib", "kagglehub")
print(" ".join(m for m in modules if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
    if [ ! -d .whl ]; then
        echo "gpu_check: missing Python modules: $missing; no .whl/ folder to install them from" >&2
        echo "(see the top of $0 for how to prepare it)." >&2
        exit 2
    fi
    echo "gpu_check: installing from .whl/ (no network): $missing"
    python -m pip install --quiet --no-index --find-links .whl -r requirements.txt
fi

if $cpu; then
    export JAX_PLATFORMS=cpu
    settings=(--preset gpt2_tiny --weights random --steps 3 --batch-size 2)
    out=$(mktemp -d)/compare-cpu-jax
else
    if ! python -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; then
        echo "gpu_check: JAX sees no GPU (jax.devices(): $(python -c 'import jax; print(jax.devices())' 2>&1 | tail -1))." >&2
        echo "Install a CUDA build of jax (jax[cuda12]), or run with --cpu to check the steps here." >&2
        exit 2
    fi
    settings=()
    out=benchmarks/results/compare-gpu-jax
fi

# Each run is its own process; 120 s each keeps the call under 5 minutes.
python -c "import sys; from lora_keras.cli import main; sys.exit(main())" compare \
    --backend jax --timeout 120 --out "$out" "${settings[@]}"
echo "gpu_check: results in $out"
