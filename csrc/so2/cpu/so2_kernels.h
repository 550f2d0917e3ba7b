// Raw-pointer CPU kernels of the eSEN edge rotations (no torch headers: unit-tested by ctest).
//
// A Wigner-D matrix restricted to the edge-frame rows is block diagonal: row r, of degree ℓ_r, has
// nonzero entries only in the 2ℓ_r + 1 columns ℓ_r² .. ℓ_r² + 2ℓ_r of its degree. The kernels take
// those entries only, in a compact per-edge row `wigner` [E, NB]: row r's entries sit at
// wigner[e, off_r + j], j = 0..2ℓ_r, and `rows` [R, 2] holds (ℓ_r, off_r) (built from so2_layout in
// Python; nothing about ℓmax, mmax or the channel count is compiled in).
//
// With D_e[r, ℓ_r² + j] = wigner[e, off_r + j] the three kernels are
//   rotate_gather   out[e, r, s·C + c] = Σ_j D_e[r, ℓ_r²+j] · x[idx_s[e], ℓ_r²+j, c]          (s < S)
//   rotate_scatter  out[a, k, c]       = Σ_s Σ_{e: idx_s[e]=a} Σ_{r ∋ k} D_e[r, k] · y[e, r, s·C + c]
//   wigner_grad     gw[e, off_r + j]   = Σ_s Σ_c y[e, r, s·C + c] · x[idx_s[e], ℓ_r²+j, c]
// with S = 2 endpoint halves (so2_rotate_in: sender and receiver features side by side) or S = 1
// (so2_rotate_out_scatter). so2_rotate_in is rotate_gather (S = 2); its backward is rotate_scatter
// (grad_x) and wigner_grad (grad_wigner); so2_rotate_out_scatter is rotate_scatter (S = 1); its
// backward is rotate_gather (grad_y) and wigner_grad (grad_wigner).
//
// Layouts (row-major, contiguous): x [A, K, C], y/out of the gather [E, R, S·C], out of the scatter
// [N, K, C], wigner and gw [E, NB]. Parallelism and determinism: OpenMP over the rows each kernel
// writes (edges for the gather and the Wigner gradient, atoms for the scatter); no atomics. The
// scatter visits the edges of an atom through a stable counting sort of idx_s (sort_by_key), in
// increasing edge id, half 0 before half 1, so every result is bitwise independent of the thread
// count and the schedule. The inner loops run over the contiguous channels (vectorised).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/kernels.h"

namespace nnip_scale {
namespace so2 {

// Edge-frame rows of the compact Wigner blocks: (ℓ_r, off_r) for r < R (rows [R, 2], row-major).
struct BlockRows {
  int64_t R = 0;
  const int64_t* rows = nullptr;
  int64_t ell(int64_t r) const { return rows[2 * r]; }
  int64_t off(int64_t r) const { return rows[2 * r + 1]; }
};

// Which entry of `rows` is invalid for NB compact entries per edge and K components per atom, or
// nullptr (checked on every call: O(R)).
inline const char* check_rows(const BlockRows& b, int64_t NB, int64_t K) {
  for (int64_t r = 0; r < b.R; ++r) {
    const int64_t l = b.ell(r), o = b.off(r);
    if (l < 0) return "a row has a negative degree";
    if ((l + 1) * (l + 1) > K) return "a row's degree needs more components than the atom features have";
    if (o < 0 || o + 2 * l + 1 > NB) return "a row's block lies outside the compact Wigner row (offset + 2ℓ+1 > NB)";
  }
  return nullptr;
}

// The shared CPU helpers of csrc/common/kernels.h: the stable counting sort that groups the edges of an
// atom for the scatter (sort_by_key), the software prefetch of the rows it visits in that order, an
// order the hardware prefetcher cannot guess (prefetch_row, kPrefetchDistance edges ahead), and the
// channel block width CB (64 bytes: the accumulators stay in registers) plus a remainder.
using cpu::channel_block;
using cpu::kPrefetchDistance;
using cpu::prefetch_row;
using cpu::sort_by_key;

// Serial below ~16k multiply-adds (starting the team costs more than the work).
inline int effective_threads(int n_threads, int64_t work) { return cpu::parallel_threads(n_threads, work, 16384); }

// o[0..W) = Σ_j w[j] · xs[j·C + 0..W), j < n (n ≥ 1).
template <typename T, int64_t CB, bool REM>
inline void rotate_block(const T* __restrict w, const T* __restrict xs, T* __restrict o, int64_t n, int64_t C,
                         int64_t cw) {
  const int64_t W = REM ? cw : CB;
  T acc[CB];
  {
    const T wj = w[0];
#ifdef _OPENMP
#pragma omp simd
#endif
    for (int64_t u = 0; u < W; ++u) acc[u] = wj * xs[u];
  }
  for (int64_t j = 1; j < n; ++j) {
    const T wj = w[j];
    const T* __restrict xj = xs + j * C;
#ifdef _OPENMP
#pragma omp simd
#endif
    for (int64_t u = 0; u < W; ++u) acc[u] += wj * xj[u];
  }
#ifdef _OPENMP
#pragma omp simd
#endif
  for (int64_t u = 0; u < W; ++u) o[u] = acc[u];
}

// rotate_gather (module comment): out [E, R, S·C] written entirely. idx[s] [E], values in [0, A).
template <typename T>
void rotate_gather(const T* x, const T* wigner, const int64_t* const* idx, int S, const BlockRows& b, T* out,
                   int64_t E, int64_t K, int64_t C, int64_t NB, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t R = b.R, SC = S * C;
  if (E <= 0 || R <= 0 || C <= 0) return;
  int64_t ncols = 0;
  for (int64_t r = 0; r < R; ++r) ncols += 2 * b.ell(r) + 1;
  const int nt = effective_threads(n_threads, E * S * ncols * C);
  (void)K;
  (void)nt;  // unused without OpenMP
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
  for (int64_t e = 0; e < E; ++e) {
    const T* we = wigner + e * NB;
    for (int s = 0; s < S; ++s) {
      const T* xa = x + idx[s][e] * K * C;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t l = b.ell(r);
        const T* w = we + b.off(r);
        const T* xs = xa + l * l * C;
        T* o = out + (e * R + r) * SC + s * C;
        int64_t u0 = 0;
        for (; u0 + CB <= C; u0 += CB) rotate_block<T, CB, false>(w, xs + u0, o + u0, 2 * l + 1, C, CB);
        if (u0 < C) rotate_block<T, CB, true>(w, xs + u0, o + u0, 2 * l + 1, C, C - u0);
      }
    }
  }
}

// rotate_scatter (module comment): out [N, K, C] written entirely. For each half s, ptr[s] [N + 1]
// and order[s] [E] from sort_by_key(idx_s).
template <typename T>
void rotate_scatter(const T* y, const T* wigner, const int64_t* const* ptr, const int64_t* const* order, int S,
                    const BlockRows& b, T* out, int64_t N, int64_t E, int64_t K, int64_t C, int64_t NB,
                    int n_threads) {
  const int64_t R = b.R, SC = S * C, row = K * C;
  if (N <= 0 || K <= 0 || C <= 0) return;
  int64_t ncols = 0;
  for (int64_t r = 0; r < R; ++r) ncols += 2 * b.ell(r) + 1;
  const int nt = effective_threads(n_threads, std::max<int64_t>(E, 1) * S * ncols * C);
  (void)nt;  // unused without OpenMP
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
#endif
  for (int64_t a = 0; a < N; ++a) {
    T* __restrict acc = out + a * row;
    std::memset(acc, 0, sizeof(T) * static_cast<size_t>(row));
    for (int s = 0; s < S; ++s) {
      const int64_t p1 = ptr[s][a + 1];
      for (int64_t p = ptr[s][a]; p < p1; ++p) {
        if (p + kPrefetchDistance < p1) {
          const int64_t en = order[s][p + kPrefetchDistance];
          prefetch_row(wigner + en * NB, NB);
          for (int64_t r = 0; r < R; ++r) prefetch_row(y + (en * R + r) * SC + s * C, C);
        }
        const int64_t e = order[s][p];
        const T* we = wigner + e * NB;
        const T* ye = y + e * R * SC + s * C;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t l = b.ell(r), n = 2 * l + 1;
          const T* w = we + b.off(r);
          const T* __restrict yr = ye + r * SC;
          T* ak = acc + l * l * C;
          for (int64_t j = 0; j < n; ++j) {
            const T wj = w[j];
            T* __restrict akj = ak + j * C;
#ifdef _OPENMP
#pragma omp simd
#endif
            for (int64_t c = 0; c < C; ++c) akj[c] += wj * yr[c];
          }
        }
      }
    }
  }
}

// wigner_grad (module comment): gw [E, NB] written entirely (entries no row covers are 0; rows that
// share entries add up). y [E, R, S·C], x [A, K, C], idx[s] [E].
template <typename T>
void wigner_grad(const T* y, const T* x, const int64_t* const* idx, int S, const BlockRows& b, T* gw, int64_t E,
                 int64_t K, int64_t C, int64_t NB, int n_threads) {
  const int64_t R = b.R, SC = S * C;
  if (E <= 0 || NB <= 0) return;
  int64_t ncols = 0;
  for (int64_t r = 0; r < R; ++r) ncols += 2 * b.ell(r) + 1;
  const int nt = effective_threads(n_threads, E * S * ncols * std::max<int64_t>(C, 1));
  (void)nt;  // unused without OpenMP
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
  for (int64_t e = 0; e < E; ++e) {
    T* ge = gw + e * NB;
    std::memset(ge, 0, sizeof(T) * static_cast<size_t>(NB));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t l = b.ell(r), n = 2 * l + 1;
      T* g = ge + b.off(r);
      for (int64_t j = 0; j < n; ++j) {
        T sum = T(0);
        for (int s = 0; s < S; ++s) {
          const T* __restrict yr = y + (e * R + r) * SC + s * C;
          const T* __restrict xj = x + (idx[s][e] * K + l * l + j) * C;
          T part = T(0);
#ifdef _OPENMP
#pragma omp simd reduction(+ : part)
#endif
          for (int64_t c = 0; c < C; ++c) part += yr[c] * xj[c];
          sum += part;
        }
        g[j] += sum;
      }
    }
  }
}

}  // namespace so2
}  // namespace nnip_scale
