// CUDA kernels of scatter_sum (atomic adds, one thread per element) and gather_rows (row copies
// with the widest aligned word). See scatter_kernels.h for the contract.
#include "scatter/cuda/scatter_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nnip_scale {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }

template <typename In, typename Acc>
__global__ void scatter_sum_kernel(const In* __restrict__ src, const int64_t* __restrict__ index,
                                   Acc* __restrict__ out, int64_t E, int64_t F, int64_t dim_size) {
  const int64_t total = E * F;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = k / F, f = k - e * F;
    const int64_t i = __ldg(index + e);
    if (i < 0 || i >= dim_size) continue;
    atomicAdd(out + i * F + f, to_acc(src[k]));
  }
}

template <typename Word>
__global__ void gather_kernel(const Word* __restrict__ x, const int64_t* __restrict__ index,
                              Word* __restrict__ out, int64_t E, int64_t n_rows, int64_t W) {
  const int64_t total = E * W;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = k / W, w = k - e * W;
    const int64_t i = __ldg(index + e);
    out[k] = (i >= 0 && i < n_rows) ? x[i * W + w] : Word{};
  }
}

int grid_for(int64_t total) {
  int64_t blocks = (total + kThreads - 1) / kThreads;
  const int64_t cap = 65535LL * 8;
  return static_cast<int>(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

template <typename In, typename Acc>
cudaError_t launch_scatter(const In* src, const int64_t* index, Acc* out, int64_t E, int64_t F,
                           int64_t dim_size, cudaStream_t stream) {
  if (E <= 0 || F <= 0 || dim_size <= 0) return cudaSuccess;
  scatter_sum_kernel<In, Acc><<<grid_for(E * F), kThreads, 0, stream>>>(src, index, out, E, F,
                                                                         dim_size);
  return cudaGetLastError();
}

template <typename Word>
cudaError_t launch_gather(const void* x, const int64_t* index, void* out, int64_t E,
                          int64_t n_rows, int64_t row_bytes, cudaStream_t stream) {
  const int64_t W = row_bytes / static_cast<int64_t>(sizeof(Word));
  gather_kernel<Word><<<grid_for(E * W), kThreads, 0, stream>>>(
      static_cast<const Word*>(x), index, static_cast<Word*>(out), E, n_rows, W);
  return cudaGetLastError();
}

bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

}  // namespace

template <typename T>
cudaError_t scatter_sum(const T* src, const int64_t* index, T* out, int64_t E, int64_t F, int64_t dim_size,
                        cudaStream_t stream) {
  return launch_scatter(src, index, out, E, F, dim_size, stream);
}
template cudaError_t scatter_sum<float>(const float*, const int64_t*, float*, int64_t, int64_t, int64_t,
                                        cudaStream_t);
template cudaError_t scatter_sum<double>(const double*, const int64_t*, double*, int64_t, int64_t, int64_t,
                                         cudaStream_t);

cudaError_t scatter_sum_bf16_acc_f32(const void* src, const int64_t* index, float* out, int64_t E,
                                     int64_t F, int64_t dim_size, cudaStream_t stream) {
  return launch_scatter(static_cast<const __nv_bfloat16*>(src), index, out, E, F, dim_size, stream);
}

cudaError_t scatter_sum_f16_acc_f32(const void* src, const int64_t* index, float* out, int64_t E,
                                    int64_t F, int64_t dim_size, cudaStream_t stream) {
  return launch_scatter(static_cast<const __half*>(src), index, out, E, F, dim_size, stream);
}

cudaError_t gather_rows_bytes(const void* x, const int64_t* index, void* out, int64_t E,
                              int64_t n_rows, int64_t row_bytes, cudaStream_t stream) {
  if (E <= 0 || row_bytes <= 0) return cudaSuccess;
  for (int64_t w : {16, 8, 4, 2}) {
    if (row_bytes % w == 0 && aligned(x, w) && aligned(out, w)) {
      switch (w) {
        case 16: return launch_gather<int4>(x, index, out, E, n_rows, row_bytes, stream);
        case 8: return launch_gather<int2>(x, index, out, E, n_rows, row_bytes, stream);
        case 4: return launch_gather<int>(x, index, out, E, n_rows, row_bytes, stream);
        default: return launch_gather<short>(x, index, out, E, n_rows, row_bytes, stream);
      }
    }
  }
  return launch_gather<char>(x, index, out, E, n_rows, row_bytes, stream);
}

}  // namespace cuda
}  // namespace nnip_scale
