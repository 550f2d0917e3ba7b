// Device-memory helpers of the GPU C++ tests (<family>/tests/test_cuda_*_kernels.cpp; need the CUDA runtime).
#pragma once
#include <cuda_runtime_api.h>

#include <vector>

#include "tests/check.h"

// A device copy of v (at least one element allocated, so an empty vector gives a valid pointer).
template <typename T>
T* upload(const std::vector<T>& v) {
  T* d = nullptr;
  NNIP_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), sizeof(T) * (v.empty() ? 1 : v.size())) == cudaSuccess);
  if (!v.empty()) NNIP_CHECK(cudaMemcpy(d, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice) == cudaSuccess);
  return d;
}

// n doubles from the device.
inline std::vector<double> download(const double* d, size_t n) {
  std::vector<double> h(n);
  if (n) NNIP_CHECK(cudaMemcpy(h.data(), d, sizeof(double) * n, cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}

// 0 when a CUDA device is present; otherwise says the test is skipped and returns 77 (ctest's
// SKIP_RETURN_CODE): use as `if (const int rc = require_gpu()) return rc;`.
inline int require_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) return 0;
  std::printf("no CUDA device: skipped\n");
  return 77;
}
