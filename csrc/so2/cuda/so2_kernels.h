// Pure-CUDA launchers of the eSEN edge rotations (raw pointers + stream, no torch headers, so CMake
// compiles them with nvcc on machines without a GPU). Same compact Wigner blocks, layouts and math as
// the CPU kernels (csrc/so2/cpu/so2_kernels.h): rows [R, 2] = (ℓ_r, off_r) per edge-frame row,
//   gather   out[e, r, s·C + c] = Σ_j w[e, off_r + j] · x[idx_s[e], ℓ_r² + j, c]
//   scatter  out[a, k, c]       = Σ_s Σ_{e ∈ CSR_s(a)} Σ_{r: ℓ_r = ℓ(k)} w[e, off_r + k − ℓ_r²] · y[e, r, s·C + c]
//   wgrad    gw[e, n]           = Σ_{r covering n} Σ_s Σ_c y[e, r, s·C + c] · x[idx_s[e], ℓ_r² + n − off_r, c]
// Algorithm: one thread per output element (coalesced over the contiguous channels for the gather
// and the scatter; one thread per compact entry for the Wigner gradient), each summing its terms in
// a fixed order: deterministic, no atomics. The scatter visits an atom's edges through the CSR of a
// stable sort of the indices (ptr_s [N + 1], order_s [E]; built by the caller on the device).
// Indices and tables are not validated here (a device-to-host copy; the CPU kernels check them).
//
// Status: the torch glue and the resolver registration are not written yet (they need a CUDA build
// of torch and a GPU run); csrc/so2/tests/test_so2_cuda_emulated.cpp runs these kernels on the host
// against the CPU kernels.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace nnip_scale {
namespace cuda {

struct SO2RowsDevice {
  int64_t R = 0;
  const int64_t* rows = nullptr;  // [R, 2] (ℓ_r, off_r), device memory
};

// out [E, R, S·C] (written entirely); idx1 unused when S == 1.
cudaError_t so2_rotate_gather(const float* x, const float* w, const int64_t* idx0, const int64_t* idx1, int S,
                              SO2RowsDevice b, float* out, int64_t E, int64_t K, int64_t C, int64_t NB,
                              cudaStream_t stream);
cudaError_t so2_rotate_gather(const double* x, const double* w, const int64_t* idx0, const int64_t* idx1, int S,
                              SO2RowsDevice b, double* out, int64_t E, int64_t K, int64_t C, int64_t NB,
                              cudaStream_t stream);
// out [N, K, C] (written entirely).
cudaError_t so2_rotate_scatter(const float* y, const float* w, const int64_t* ptr0, const int64_t* order0,
                               const int64_t* ptr1, const int64_t* order1, int S, SO2RowsDevice b, float* out,
                               int64_t N, int64_t K, int64_t C, int64_t NB, cudaStream_t stream);
cudaError_t so2_rotate_scatter(const double* y, const double* w, const int64_t* ptr0, const int64_t* order0,
                               const int64_t* ptr1, const int64_t* order1, int S, SO2RowsDevice b, double* out,
                               int64_t N, int64_t K, int64_t C, int64_t NB, cudaStream_t stream);
// gw [E, NB] (written entirely).
cudaError_t so2_wigner_grad(const float* y, const float* x, const int64_t* idx0, const int64_t* idx1, int S,
                            SO2RowsDevice b, float* gw, int64_t E, int64_t K, int64_t C, int64_t NB,
                            cudaStream_t stream);
cudaError_t so2_wigner_grad(const double* y, const double* x, const int64_t* idx0, const int64_t* idx1, int S,
                            SO2RowsDevice b, double* gw, int64_t E, int64_t K, int64_t C, int64_t NB,
                            cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
