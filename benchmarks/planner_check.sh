#!/usr/bin/env bash
# Measures the planner's out-of-sample checks on this CPU, one run at a time, niced (see
# benchmarks/planner_check.py). Large full fine-tuning is left out where the planner predicts
# more than this machine can give: PLANNER_CHECK_SKIP="planner-check-large:full" by default.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
skip=${PLANNER_CHECK_SKIP:-planner-check-large:full}
run() {  # folder preset modes batch length
    local out=benchmarks/results/$1
    [ -e "$out/results.json" ] && { echo "$out: already measured"; return; }
    rm -rf "$out"
    nice -n 10 "$python" -m lora_keras.cli compare --preset "$2" --weights random --modes "$3" \
        --batch-size "$4" --sequence-length "$5" --steps 3 --out "$out"
}
modes_of() {  # folder modes: the modes not skipped
    local kept=() mode
    for mode in ${2//,/ }; do
        [[ ",$skip," == *",$1:$mode,"* ]] || kept+=("$mode")
    done
    (IFS=,; echo "${kept[*]}")
}
run planner-check-medium gpt2_medium_en "$(modes_of planner-check-medium full,lora,qlora)" 2 128
for length in 128 256 512 1024; do
    run "planner-check-seq-$length" gpt2_base_en lora 2 "$length"
done
run planner-check-large gpt2_large_en "$(modes_of planner-check-large full,lora,qlora)" 2 128
