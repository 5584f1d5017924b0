#!/usr/bin/env bash
# skprobe's GPU checks in one run: token extraction (ViT-B, eager and compiled, arrays and files), the CUDA
# tests, training at AudioSet-20k size, bf16 autocast quality, batched inference. Each step has its own time
# limit and writes its log to $OUT/<step>.log; the default steps' limits add up to 600 s (one device command).
#
# On a CUDA machine, from the repository root (torch, scikit-learn installed; skorch and soundfile may come as
# wheels in .whl/, installed into /tmp/site; the autocast step needs .gpu/event_scenes_yamnet.npz, written by
# `python benchmarks/bench_autocast.py --save .gpu/event_scenes_yamnet.npz` on a machine that has the tokens):
#
#     OUT=/tmp/gpu-logs bash benchmarks/gpu_suite.sh                   # env extract compile files tests
#     OUT=/tmp/gpu-logs bash benchmarks/gpu_suite.sh scale autocast    # chosen steps: env extract compile files
#                                                                      # tests scale autocast inference suite
set -u
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
PY=${PYTHON:-python3}
# the extraction steps' setting; a dry run on a CPU machine before a GPU session:
#     DEVICE=cpu ENCODER=tiny-vit CLIPS=32 FILES_CLIPS=16 BATCH=8 OUT=/tmp/gs bash benchmarks/gpu_suite.sh extract compile files
# COMPILE_MODE=reduce-overhead (or another torch.compile mode) for the compile step's mode.
DEVICE=${DEVICE:-cuda}
ENCODER=${ENCODER:-eat}
CLIPS=${CLIPS:-4096}
FILES_CLIPS=${FILES_CLIPS:-1024}
BATCH=${BATCH:-256}
EXTRACT="$PY benchmarks/bench_transformer.py --encoder $ENCODER --random-weights --device $DEVICE --batch-size $BATCH \
--n-jobs ${N_JOBS:-16}"

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    start=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s"
    tail -n "${TAIL:-30}" "$OUT/$name.log"
}

steps=${*:-env extract compile files tests}
for s in $steps; do
    case $s in
    env) step env 60 bash -c "nvidia-smi; $PY -c 'import torch, sklearn, skorch; print(torch.__version__, \
torch.cuda.get_device_name(), sklearn.__version__, skorch.__version__)'" ;;
    extract) step extract 100 $EXTRACT --clips "$CLIPS" --skip-files ;;
    compile) step compile 180 $EXTRACT --clips "$CLIPS" --skip-files --compile ${COMPILE_MODE:-} --repeats 3 ;;
    files) step files 100 $EXTRACT --clips "$FILES_CLIPS" ;;
    tests) step tests 160 $PY -m pytest -q -x -p no:cacheprovider tests/test_probe_data.py tests/test_probes.py \
        tests/test_probe_defaults.py tests/test_length_selection.py tests/test_estimator_checks.py \
        tests/test_convex_gated.py tests/test_frame_scores.py tests/test_interrupt.py tests/test_probe_files.py \
        tests/test_compile.py tests/test_transformer.py ;;
    scale) step scale 250 $PY benchmarks/bench_gpu_scale.py --epochs 3 --probes prototypical attentive linear \
        --item-sync linear ;;
    autocast) step autocast 90 $PY benchmarks/bench_autocast.py .gpu/event_scenes_yamnet.npz ;;
    inference) step inference 40 $PY benchmarks/bench_probe_training.py --device cuda --inference ;;
    suite) step suite 200 $PY -m pytest -q -n 8 -p no:cacheprovider ;;
    *) echo "unknown step $s" ;;
    esac
done
