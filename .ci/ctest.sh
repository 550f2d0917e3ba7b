#!/usr/bin/env bash
# C++ side of CI: build csrc/ against libtorch with CMake, run the C++ tests under ctest, and (when
# nvcc is present) prove the CUDA kernels compile, even on a machine with no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/cmake
prefix=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B "$build" -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$build" -j2
if command -v nvcc >/dev/null 2>&1; then
  grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$build/CMakeCache.txt" \
    || { echo "nvcc is on PATH but CMake did not enable CUDA: the CUDA sources were not compiled" >&2; exit 1; }
  echo "CUDA sources compiled with $(nvcc --version | tail -n 1)"
fi
ctest --test-dir "$build" --output-on-failure
