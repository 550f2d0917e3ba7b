// The pure-CUDA kernels against a host loop; exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "tests/check.h"
#include "tests/cuda_device.h"
#include "scatter/cuda/scatter_kernels.h"

int main() {
  if (const int rc = require_gpu()) return rc;
  const int64_t E = 5000, F = 33, N = 200;
  std::vector<double> src(E * F), ref(N * F, 0.0), out(N * F);
  std::vector<int64_t> idx(E);
  for (int64_t e = 0; e < E; ++e) idx[e] = (e * 7919) % (N - 1);
  for (int64_t k = 0; k < E * F; ++k) src[k] = double(k % 97) / 97.0 - 0.5;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t f = 0; f < F; ++f) ref[idx[e] * F + f] += src[e * F + f];
  double *d_src, *d_out, *d_g;
  int64_t* d_idx;
  NNIP_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_src), E * F * 8) == cudaSuccess);
  NNIP_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_out), N * F * 8) == cudaSuccess);
  NNIP_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_g), E * F * 8) == cudaSuccess);
  NNIP_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_idx), E * 8) == cudaSuccess);
  cudaMemcpy(d_src, src.data(), E * F * 8, cudaMemcpyHostToDevice);
  cudaMemcpy(d_idx, idx.data(), E * 8, cudaMemcpyHostToDevice);
  cudaMemset(d_out, 0, N * F * 8);
  NNIP_CHECK(nnip_scale::cuda::scatter_sum<double>(d_src, d_idx, d_out, E, F, N, 0) == cudaSuccess);
  cudaMemcpy(out.data(), d_out, N * F * 8, cudaMemcpyDeviceToHost);
  for (int64_t k = 0; k < N * F; ++k) NNIP_CHECK_NEAR(out[k], ref[k], 1e-9);
  NNIP_CHECK(nnip_scale::cuda::gather_rows_bytes(d_out, d_idx, d_g, E, N, F * 8, 0) == cudaSuccess);
  std::vector<double> g(E * F);
  cudaMemcpy(g.data(), d_g, E * F * 8, cudaMemcpyDeviceToHost);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t f = 0; f < F; ++f) NNIP_CHECK(g[e * F + f] == out[idx[e] * F + f]);
  std::printf("cuda kernels: ok\n");
  return 0;
}
