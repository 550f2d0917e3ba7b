// Pure-CUDA launchers for scatter_sum / gather_rows: raw pointers + stream, no torch headers, so
// CMake compiles them with nvcc on machines without a GPU (and without a CUDA build of torch).
// Layout: row-major [rows, F]; index is int64 [E]. Out-of-range indices are skipped (checking
// them would need a device-to-host sync); the CPU kernels reject them.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace nnip_scale {
namespace cuda {

// out (zero-initialised by the caller) += scatter of src; T = float / double (instantiated in the .cu)
// accumulate in their type.
template <typename T>
cudaError_t scatter_sum(const T* src, const int64_t* index, T* out, int64_t E, int64_t F, int64_t dim_size,
                        cudaStream_t stream);
// bf16 / fp16 inputs (raw 16-bit storage) accumulate into an fp32 `out`.
cudaError_t scatter_sum_bf16_acc_f32(const void* src, const int64_t* index, float* out, int64_t E,
                                     int64_t F, int64_t dim_size, cudaStream_t stream);
cudaError_t scatter_sum_f16_acc_f32(const void* src, const int64_t* index, float* out, int64_t E,
                                    int64_t F, int64_t dim_size, cudaStream_t stream);

// out[e, :] = x[index[e], :] for rows of `row_bytes` bytes (any dtype); rows of out whose index
// is outside [0, n_rows) are set to zero.
cudaError_t gather_rows_bytes(const void* x, const int64_t* index, void* out, int64_t E,
                              int64_t n_rows, int64_t row_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
