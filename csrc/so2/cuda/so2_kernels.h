// Pure-CUDA launchers of the eSEN edge rotations (raw pointers + stream, no torch headers, so CMake
// compiles them with nvcc on machines without a GPU). Same compact Wigner blocks, layouts and math as
// the CPU kernels (csrc/so2/cpu/so2_kernels.h): rows [R, 2] = (ℓ_r, off_r) per edge-frame row,
//   gather   out[e, r, s·C + c] = Σ_j w[e, off_r + j] · x[idx_s[e], ℓ_r² + j, c]
//   scatter  out[a, k, c]       = Σ_s Σ_{e ∈ CSR_s(a)} Σ_{r: ℓ_r = ℓ(k)} w[e, off_r + k − ℓ_r²] · y[e, r, s·C + c]
//   wgrad    gw[e, n]           = Σ_{r covering n} Σ_s Σ_c y[e, r, s·C + c] · x[idx_s[e], ℓ_r² + n − off_r, c]
// Algorithm: one thread per output element (coalesced over the contiguous channels for the gather
// and the scatter; one thread per compact entry for the Wigner gradient), each summing its terms in
// a fixed order: deterministic, no atomics. The scatter visits an atom's edges through the CSR of a
// stable sort of the indices (ptr_s [N + 1], order_s [E]; built by the caller on the device, in
// csrc/so2/cuda/so2_cuda.cpp with a stable device sort and a searchsorted).
//
// Indices and tables are not validated by the caller (that needs a device-to-host copy; the CPU glue
// rejects both with an error), so the kernels never read out of bounds instead: an endpoint index
// outside [0, A) adds nothing (its half of the gathered row is 0, it adds nothing to the Wigner
// gradient); an edge whose key lies outside [0, N) is in no CSR segment of the scatter (the caller's
// searchsorted); a row of `rows` that the CPU would reject (ℓ < 0, (ℓ + 1)² > K, or its block outside
// [0, NB)) makes every output element that reads the table through it NaN (the gather's elements of
// that row; all of the scatter's and the Wigner gradient's, which scan every row), never a silently
// wrong number.
//
// Status: torch glue in csrc/so2/cuda/so2_cuda.cpp (registered for the CUDA dispatch key), not yet
// registered with the resolver (needs a GPU run of ctest `cuda_so2_kernels` and
// tests/test_ops_so2_cuda.py); csrc/so2/tests/test_so2_cuda_emulated.cpp runs these kernels on the
// host against the CPU kernels.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace nnip_scale {
namespace cuda {

struct SO2RowsDevice {
  int64_t R = 0;
  const int64_t* rows = nullptr;  // [R, 2] (ℓ_r, off_r), device memory
};

// The launchers, templates over T = float / double (explicitly instantiated in the .cu).
// out [E, R, S·C] (written entirely); x [A, K, C]; idx1 unused when S == 1.
template <typename T>
cudaError_t so2_rotate_gather(const T* x, const T* w, const int64_t* idx0, const int64_t* idx1, int S,
                              SO2RowsDevice b, T* out, int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB,
                              cudaStream_t stream);
// out [N, K, C] (written entirely).
template <typename T>
cudaError_t so2_rotate_scatter(const T* y, const T* w, const int64_t* ptr0, const int64_t* order0,
                               const int64_t* ptr1, const int64_t* order1, int S, SO2RowsDevice b, T* out, int64_t N,
                               int64_t K, int64_t C, int64_t NB, cudaStream_t stream);
// gw [E, NB] (written entirely); y [E, R, S·C], x [A, K, C].
template <typename T>
cudaError_t so2_wigner_grad(const T* y, const T* x, const int64_t* idx0, const int64_t* idx1, int S,
                            SO2RowsDevice b, T* gw, int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB,
                            cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
