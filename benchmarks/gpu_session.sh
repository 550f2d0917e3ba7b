#!/usr/bin/env bash
# One prepared GPU session (docs/ops.md, "A GPU session, prepared"): run from the repository root on a lent
# H100/H200 (the `device` tool), e.g. with `run(command="bash benchmarks/gpu_session.sh", carry=[".whl"],
# timeout_s=590)`. Needs Python with a CUDA torch (the device image's python3), nvcc and CMake; the wheels the
# tests need that the image lacks go in .whl/ (docs/ops.md lists them) and are installed into /tmp/site.
#
# Steps (each runs even if an earlier one failed, each under its own time limit; the summary says which
# passed): build the extension in place with the CUDA kernels (sm_90), the C++ tests (the GPU ctests run
# there), the GPU pytest files, the scatter benchmark (achieved bandwidth against the HBM peak), the
# interaction, contraction and eSEN-rotation benchmarks (native CUDA kernels vs torch, and vs cueq when
# installed). Logs (build, ctest, pytest, bench), the benchmark tables (RESULTS-gpu.md, sections to copy into
# benchmarks/RESULTS.md) and summary.txt go to $OUT (default ./gpu-out): six files, within what the device tool
# brings back. Arguments choose steps, e.g. `gpu_session.sh build ctest pytest` in one call and
# `gpu_session.sh bench_scatter bench_tp bench_sc bench_so2` in the next on the same warm machine (the in-place
# build is kept between calls): the limits of all seven add up to more than one call's 10 minutes.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# .ci/ctest.sh calls `python`: make it the one with the CUDA torch
mkdir -p /tmp/gpu-session-bin && ln -sf "$(command -v "$py")" /tmp/gpu-session-bin/python
export PATH=/tmp/gpu-session-bin:$PATH

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >"$out/summary.txt"
step() {  # step NAME SECONDS COMMAND...: run COMMAND with its output in $out/NAME.log (bench_*: all in bench.log)
  local name=$1 limit=$2
  shift 2
  local log="$out/${name%%_*}.log"
  echo "== $name ($(date -u +%H:%M:%S))" | tee -a "$log"
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" >>"$log" 2>&1 || rc=$?
  tail -n 6 "$log"
  if [ "$rc" -eq 0 ]; then line="$name: ok ($((SECONDS - t0)) s)"; else line="$name: FAILED rc=$rc ($((SECONDS - t0)) s)"; fi
  echo "$line" >>"$out/summary.txt"  # written as it goes: a run stopped at the call's limit keeps it
}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

for name in "${@:-build ctest pytest bench_scatter bench_tp bench_sc bench_so2}"; do
  for s in $name; do
    case $s in
      build) step build 200 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$(nproc)" "$py" setup.py build_ext --inplace ;;
      ctest) step ctest 150 bash .ci/ctest.sh ;;
      pytest) step pytest 200 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_ops_tp_cuda.py \
        tests/test_ops_so2_cuda.py tests/test_ops_sc_native.py tests/test_ops_scatter.py ;;
      bench_scatter) step bench_scatter 90 "$py" benchmarks/bench_scatter.py --device cuda --write "$out/RESULTS-gpu.md" ;;
      bench_tp) step bench_tp 200 "$py" benchmarks/bench_tp.py --device cuda --repeats 10 --write "$out/RESULTS-gpu.md" ;;
      bench_sc) step bench_sc 120 "$py" benchmarks/bench_sc.py --device cuda --repeats 10 --double \
        --write "$out/RESULTS-gpu.md" ;;
      bench_so2) step bench_so2 120 "$py" benchmarks/bench_so2.py --device cuda --repeats 10 --write "$out/RESULTS-gpu.md" ;;
      *) echo "gpu_session.sh: unknown step '$s'; expected build ctest pytest bench_scatter bench_tp bench_sc bench_so2" >&2
         exit 2 ;;
    esac
  done
done
cat "$out/summary.txt"
