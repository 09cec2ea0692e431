#!/usr/bin/env bash
# The checks only a GPU can show, as one script for a short lease (docs/benchmarks.md, "On a GPU"):
#
#   benchmarks/gpu_checks.sh WORK RESULTS STEP...      STEP: env | train | build | validate
#
#   env       the GPU, driver and package versions
#   train     benchmarks/bench_train.py gpu: l7 at 224, bf16, against timm's L1 and L7 (training images/s)
#   build     slimnas lut build --space l7 --backend torch-cuda --batch-size 64 (every other setting the CLI's
#             default), into WORK/l7-torch-cuda-b64.parquet; an interrupted build resumes from its journal
#   validate  slimnas lut validate on 50 random networks and the presets, in a new process after the build
#
# Each step has its own time limit in seconds (BUILD_S 330, VALIDATE_S 180, TRAIN_S 170 by default), and a step
# that fails or runs out does not stop the next. On an H200 (2026-11-30) a build's in-context stage took 3.5
# minutes and the train step 2; validation has not run there yet. Run all three in one 15-minute lease:
#
#   here:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#              --platform manylinux2014_x86_64 -d .whl pydantic pydantic_core annotated-types typing-inspection \
#              typing_extensions        (pinned to the versions in .venv; .whl/ listed in .git/info/exclude)
#   there: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#              PYTHONPATH=/tmp/site benchmarks/gpu_checks.sh /tmp/gpu $OUT env build validate train
#          (carrying .whl)
#
# WORK keeps the table and the build's journal between calls on a machine kept warm. What the steps print and
# write is copied to RESULTS, the build's journal too (gzipped). Needs torch, timm, pydantic and PyYAML only (no
# Ray, no MLflow). SPACE, BACKEND and BATCH change the table: `SPACE=tiny BACKEND=torch-cpu BATCH=1` tries the
# script on a CPU.
set -u
work=$1 results=$2
shift 2
mkdir -p "$work" "$results"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
space=${SPACE:-l7} backend=${BACKEND:-torch-cuda} batch=${BATCH:-64}
table="$work/$space-$backend-b$batch.parquet"
log="$results/gpu_checks.log"

step() {  # step NAME SECONDS COMMAND...: run, log, time
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    echo "== $name ($(date -u +%FT%TZ), limit ${limit}s): $*" >>"$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - start)) s" >>"$log"
    return $rc
}

for what in "$@"; do
    case $what in
    env)
        step env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
            python3 -c "import torch, timm, pydantic; print(torch.__version__, torch.version.cuda,
                        torch.cuda.get_device_name(), timm.__version__, pydantic.__version__)"; nproc'
        ;;
    train)
        step train "${TRAIN_S:-170}" python3 benchmarks/bench_train.py gpu --rounds "${ROUNDS:-2}" --steps 20 --batch 64
        cp benchmarks/results/bench_train-gpu-*.json "$results/" 2>/dev/null
        ;;
    build)
        if [ ! -f "$table" ]; then
            # the journal is kept (benchmarks/context_heldout.py reads it), or left half-done if the step runs out
            step build "${BUILD_S:-330}" python3 -m slimnas.platform.cli lut build --space "$space" \
                --backend "$backend" --batch-size "$batch" --out "$table" --keep-journal
        fi
        [ -f "$table" ] && cp "$table" "$results/"
        for journal in "$table.journal.jsonl" "$table.partial.jsonl"; do
            [ -f "$journal" ] && gzip -c "$journal" >"$results/journal.jsonl.gz"
        done
        ;;
    validate)
        [ -f "$table" ] && step validate "${VALIDATE_S:-180}" python3 -m slimnas.platform.cli lut validate \
            --lut "$table" --num-archs 50 --seed 1 --out-dir "$results/validation"
        ;;
    *) echo "unknown step: $what" >>"$log" ;;
    esac
done
echo "== done $(date -u +%FT%TZ)" >>"$log"
# progress lines end in \r: one line per update
tr '\r' '\n' <"$log" | grep -v '^$' >"$log.tmp" && mv "$log.tmp" "$log"
