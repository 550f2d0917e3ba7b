// Raw-pointer CPU kernels for scatter_sum / gather_rows (no torch headers: unit-tested by ctest;
// conventions in csrc/common/kernels.h, which also holds count_invalid_index).
// Layout: src/out are row-major [rows, F] (F = product of the trailing dims), index is int64 [E].
#pragma once
#include <cstdint>
#include <cstring>

#include "common/kernels.h"

namespace nnip_scale {
namespace cpu {

// Adds rows [e0, e1) of src into acc (rows of width F); the inner loop over F is vectorised.
template <typename T>
inline void accumulate_edges(const T* src, const int64_t* index, T* acc, int64_t e0, int64_t e1,
                             int64_t F, int64_t r0, int64_t r1) {
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t i = index[e];
    if (i < r0 || i >= r1) continue;
    T* __restrict o = acc + i * F;
    const T* __restrict s = src + e * F;
    NNIP_SIMD for (int64_t f = 0; f < F; ++f) o[f] += s[f];
  }
}

// out[i, :] = sum_{e: index[e] == i} src[e, :]  (out: [dim_size, F], written entirely).
// Two deterministic, race-free schedules (no atomics):
//  * many edges per row (E >= 4 * dim_size): each thread streams a contiguous block of edges
//    into its own accumulator (thread 0 into out, the others into `scratch`, which must hold
//    (n_threads - 1) * dim_size * F values), then the blocks are summed row-parallel. Reading
//    src sequentially keeps the hardware prefetcher busy: this op is memory-bound.
//  * otherwise each thread owns a contiguous block of output rows and scans the whole index.
// `n_threads` <= 1 (or scratch == nullptr with the first schedule) runs serially.
template <typename T>
void scatter_sum_rows(const T* src, const int64_t* index, T* out, int64_t E, int64_t F,
                      int64_t dim_size, int n_threads, T* scratch = nullptr) {
  if (dim_size <= 0 || F <= 0) return;
  if (E * F < 32768 || n_threads < 1) n_threads = 1;
  const size_t row_block = static_cast<size_t>(dim_size * F);
  if (n_threads == 1 || (E >= 4 * dim_size && scratch == nullptr)) {
    std::memset(out, 0, sizeof(T) * row_block);
    accumulate_edges(src, index, out, 0, E, F, 0, dim_size);
    return;
  }
  if (E >= 4 * dim_size) {
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
      const auto [tid, nt] = team_position();
      T* acc = tid == 0 ? out : scratch + (tid - 1) * row_block;
      std::memset(acc, 0, sizeof(T) * row_block);
      accumulate_edges(src, index, acc, E * tid / nt, E * (tid + 1) / nt, F, 0, dim_size);
#ifdef _OPENMP
#pragma omp barrier
#endif
      const int64_t n = static_cast<int64_t>(row_block);
      const int64_t k0 = n * tid / nt, k1 = n * (tid + 1) / nt;
      for (int t = 1; t < nt; ++t) {
        const T* __restrict b = scratch + (t - 1) * row_block;
        NNIP_SIMD for (int64_t k = k0; k < k1; ++k) out[k] += b[k];
      }
    }
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
  {
    const auto [tid, nt] = team_position();
    const int64_t r0 = dim_size * tid / nt, r1 = dim_size * (tid + 1) / nt;
    std::memset(out + r0 * F, 0, sizeof(T) * static_cast<size_t>((r1 - r0) * F));
    accumulate_edges(src, index, out, 0, E, F, r0, r1);
  }
}

// out[e, :] = x[index[e], :].
template <typename T>
void gather_rows(const T* x, const int64_t* index, T* out, int64_t E, int64_t F, int n_threads) {
  if (E <= 0 || F <= 0) return;
  if (E * F * static_cast<int64_t>(sizeof(T)) < 262144) n_threads = 1;  // 256 KiB
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(static)
#endif
  for (int64_t e = 0; e < E; ++e) {
    std::memcpy(out + e * F, x + index[e] * F, sizeof(T) * static_cast<size_t>(F));
  }
  (void)n_threads;
}

}  // namespace cpu
}  // namespace nnip_scale
