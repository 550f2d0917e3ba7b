// CUDA kernels of the eSEN edge rotations. See so2_kernels.h for the contract and the algorithm.
#include "so2_kernels.h"

#include <algorithm>
#include <cmath>

namespace nnip_scale {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 65535;

__device__ __forceinline__ int64_t isqrt_floor(int64_t k) {
  int64_t l = 0;
  while ((l + 1) * (l + 1) <= k) ++l;
  return l;
}

template <typename T>
__device__ __forceinline__ T quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() {
  return nanf("");
}
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return nan("");
}

// Row (ℓ, off) is one the CPU glue accepts (so2::check_rows): its block lies inside the compact row
// [0, NB) and its degree's components inside the K of the atom features.
__device__ __forceinline__ bool row_ok(int64_t l, int64_t off, int64_t K, int64_t NB) {
  return l >= 0 && (l + 1) * (l + 1) <= K && off >= 0 && off + 2 * l + 1 <= NB;
}

// Every row of the table is valid (the scatter and the Wigner gradient scan them all).
__device__ __forceinline__ bool rows_ok(const SO2RowsDevice& b, int64_t K, int64_t NB) {
  for (int64_t r = 0; r < b.R; ++r)
    if (!row_ok(__ldg(b.rows + 2 * r), __ldg(b.rows + 2 * r + 1), K, NB)) return false;
  return true;
}

// thread per (e, r, s, c), c fastest: the output index itself
template <typename T>
__global__ void so2_gather_kernel(const T* __restrict__ x, const T* __restrict__ w, const int64_t* __restrict__ idx0,
                                  const int64_t* __restrict__ idx1, int S, SO2RowsDevice b, T* __restrict__ out,
                                  int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB) {
  const int64_t R = b.R, SC = S * C, total = E * R * SC;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = t % C, s = (t / C) % S, r = (t / SC) % R, e = t / (R * SC);
    const int64_t l = __ldg(b.rows + 2 * r), off = __ldg(b.rows + 2 * r + 1);
    const int64_t a = s == 0 ? __ldg(idx0 + e) : __ldg(idx1 + e);
    if (!row_ok(l, off, K, NB)) {
      out[t] = quiet_nan<T>();
      continue;
    }
    T acc = T(0);
    if (a >= 0 && a < A) {  // an endpoint outside [0, A) adds nothing
      const T* we = w + e * NB + off;
      const T* xa = x + (a * K + l * l) * C + c;
      for (int64_t j = 0; j < 2 * l + 1; ++j) acc += __ldg(we + j) * __ldg(xa + j * C);
    }
    out[t] = acc;
  }
}

// thread per (a, k, c), c fastest
template <typename T>
__global__ void so2_scatter_kernel(const T* __restrict__ y, const T* __restrict__ w, const int64_t* __restrict__ ptr0,
                                   const int64_t* __restrict__ order0, const int64_t* __restrict__ ptr1,
                                   const int64_t* __restrict__ order1, int S, SO2RowsDevice b, T* __restrict__ out,
                                   int64_t N, int64_t K, int64_t C, int64_t NB) {
  const int64_t R = b.R, SC = S * C, total = N * K * C;
  const bool ok = rows_ok(b, K, NB);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = t % C, k = (t / C) % K, a = t / (K * C);
    if (!ok) {
      out[t] = quiet_nan<T>();
      continue;
    }
    const int64_t l = isqrt_floor(k), j = k - l * l;
    T acc = T(0);
    for (int s = 0; s < S; ++s) {
      const int64_t* ptr = s == 0 ? ptr0 : ptr1;
      const int64_t* order = s == 0 ? order0 : order1;
      const int64_t p1 = __ldg(ptr + a + 1);
      for (int64_t p = __ldg(ptr + a); p < p1; ++p) {
        const int64_t e = __ldg(order + p);
        for (int64_t r = 0; r < R; ++r) {
          if (__ldg(b.rows + 2 * r) != l) continue;
          acc += __ldg(w + e * NB + __ldg(b.rows + 2 * r + 1) + j) * __ldg(y + (e * R + r) * SC + s * C + c);
        }
      }
    }
    out[t] = acc;
  }
}

// thread per (e, n) compact entry
template <typename T>
__global__ void so2_wgrad_kernel(const T* __restrict__ y, const T* __restrict__ x, const int64_t* __restrict__ idx0,
                                 const int64_t* __restrict__ idx1, int S, SO2RowsDevice b, T* __restrict__ gw,
                                 int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB) {
  const int64_t R = b.R, SC = S * C, total = E * NB;
  const bool ok = rows_ok(b, K, NB);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t n = t % NB, e = t / NB;
    if (!ok) {
      gw[t] = quiet_nan<T>();
      continue;
    }
    T acc = T(0);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t l = __ldg(b.rows + 2 * r), off = __ldg(b.rows + 2 * r + 1);
      if (n < off || n >= off + 2 * l + 1) continue;
      const int64_t col = l * l + n - off;
      for (int s = 0; s < S; ++s) {
        const int64_t a = s == 0 ? __ldg(idx0 + e) : __ldg(idx1 + e);
        if (a < 0 || a >= A) continue;  // an endpoint outside [0, A) adds nothing
        const T* yr = y + (e * R + r) * SC + s * C;
        const T* xr = x + (a * K + col) * C;
        T part = T(0);
        for (int64_t c = 0; c < C; ++c) part += __ldg(yr + c) * __ldg(xr + c);
        acc += part;
      }
    }
    gw[t] = acc;
  }
}

}  // namespace

#ifndef NNIP_CUDA_EMULATION
namespace {
inline unsigned blocks_for(int64_t total) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (total + kThreads - 1) / kThreads)));
}
}  // namespace

template <typename T>
cudaError_t so2_rotate_gather(const T* x, const T* w, const int64_t* idx0, const int64_t* idx1, int S,
                              SO2RowsDevice b, T* out, int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB,
                              cudaStream_t stream) {
  const int64_t total = E * b.R * S * C;
  if (total == 0) return cudaSuccess;
  so2_gather_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(x, w, idx0, idx1, S, b, out, E, A, K, C, NB);
  return cudaGetLastError();
}

template <typename T>
cudaError_t so2_rotate_scatter(const T* y, const T* w, const int64_t* ptr0, const int64_t* order0,
                               const int64_t* ptr1, const int64_t* order1, int S, SO2RowsDevice b, T* out, int64_t N,
                               int64_t K, int64_t C, int64_t NB, cudaStream_t stream) {
  const int64_t total = N * K * C;
  if (total == 0) return cudaSuccess;
  so2_scatter_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(y, w, ptr0, order0, ptr1, order1, S, b, out, N,
                                                                   K, C, NB);
  return cudaGetLastError();
}

template <typename T>
cudaError_t so2_wigner_grad(const T* y, const T* x, const int64_t* idx0, const int64_t* idx1, int S,
                            SO2RowsDevice b, T* gw, int64_t E, int64_t A, int64_t K, int64_t C, int64_t NB,
                            cudaStream_t stream) {
  const int64_t total = E * NB;
  if (total == 0) return cudaSuccess;
  so2_wgrad_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(y, x, idx0, idx1, S, b, gw, E, A, K, C, NB);
  return cudaGetLastError();
}

#define NNIP_SO2_INSTANTIATE(T)                                                                                    \
  template cudaError_t so2_rotate_gather<T>(const T*, const T*, const int64_t*, const int64_t*, int, SO2RowsDevice, \
                                            T*, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);         \
  template cudaError_t so2_rotate_scatter<T>(const T*, const T*, const int64_t*, const int64_t*, const int64_t*,    \
                                             const int64_t*, int, SO2RowsDevice, T*, int64_t, int64_t, int64_t,     \
                                             int64_t, cudaStream_t);                                                \
  template cudaError_t so2_wigner_grad<T>(const T*, const T*, const int64_t*, const int64_t*, int, SO2RowsDevice,   \
                                          T*, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
NNIP_SO2_INSTANTIATE(float)
NNIP_SO2_INSTANTIATE(double)
#undef NNIP_SO2_INSTANTIATE
#endif  // NNIP_CUDA_EMULATION

}  // namespace cuda
}  // namespace nnip_scale
