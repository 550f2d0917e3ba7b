// Raw-pointer CPU kernels of the fused channel-wise tensor product with gather and scatter (the MACE
// interaction) and its backward. No torch headers: unit-tested by ctest. Tables: channelwise_tp/tables.h;
// conventions and the shared helpers (edge sort, channel blocks): common/kernels.h.
//
// The product (cuequivariance "uv,iu,jv,kuv+ijk" with v = 1) is table-driven; nothing about ℓ or the
// channel count is compiled in:
//   out[r, k, u] = sum_{e: receiver[e] = r} w[e, path[k], u] * sum_{q in pairs(k)} m_e[q] * x[sender[e], pair_x[q], u]
//   m_e[q]       = sum_{n in entries(q)} coeff[n] * sh[e, entry_sh[n]]
// k runs over the K output rows (each belongs to exactly one path), q over the (output row, x row)
// pairs with a nonzero Clebsch–Gordan block, n over the nonzero coefficients of one pair (one per
// harmonic j). m_e is channel independent (Q scalars per edge); the inner loops run over the C
// channels (contiguous, vectorised).
//
// Layouts (row-major, contiguous): w [E, P, C], x [A, I, C], sh [E, J], out [N, K, C];
// grad_out [N, K, C], grad_w [E, P, C], grad_x [A, I, C], grad_sh [E, J].
//
// Determinism and parallelism: no atomics. The forward visits edges grouped by receiver (a stable
// counting sort, `sort_by_key`), each output row owned by one thread; the backward visits them
// grouped by sender, each grad_x row owned by one thread, and writes grad_w / grad_sh rows of the
// edge being visited (each edge is visited once). Within a row the edges are summed in their
// original order, so the result does not depend on the number of threads or the schedule.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "channelwise_tp/tables.h"
#include "common/kernels.h"

namespace nnip_scale {
namespace cpu {

// m[q] = sum_n coeff[n] * sh_e[entry_sh[n]] for the Q pairs of one edge.
template <typename T>
inline void pair_coefficients(const TPTables& t, const T* coeff, const T* sh_e, T* m) {
  for (int64_t q = 0; q < t.Q; ++q) m[q] = pair_coefficient(t, coeff, sh_e, q);
}

// One edge of the forward, channels [u0, u0 + W) (W = CB, or the remainder width cw < CB):
//   acc[k, u] += w[p_k, u] * sum_{q in k} m[q] * x[i_q, u]
template <typename T, int64_t CB, bool REM>
inline void forward_edge_block(const TPTables& t, const T* __restrict m, const T* __restrict xs,
                               const T* __restrict we, T* __restrict acc, int64_t C, int64_t u0,
                               int64_t cw) {
  const int64_t W = REM ? cw : CB;
  for (int64_t k = 0; k < t.K; ++k) {
    const int64_t q0 = t.pair_ptr[k], q1 = t.pair_ptr[k + 1];
    if (q0 == q1) continue;
    T tmp[CB];
    {
      const T mq = m[q0];
      const T* __restrict xi = xs + t.pair_x[q0] * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) tmp[u] = mq * xi[u];
    }
    for (int64_t q = q0 + 1; q < q1; ++q) {
      const T mq = m[q];
      const T* __restrict xi = xs + t.pair_x[q] * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) tmp[u] += mq * xi[u];
    }
    const T* __restrict wk = we + t.path_of_k[k] * C + u0;
    T* __restrict ak = acc + k * C + u0;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) ak[u] += wk[u] * tmp[u];
  }
}

// Forward: out [N, K, C] (written entirely). rcv_ptr [N + 1] / rcv_order [E] from sort_by_key on
// the receivers, or rcv_order nullptr when the edges are already sorted by receiver
// (segments_of_grouped); sender values in [0, A).
template <typename T>
void channelwise_tp_forward(const T* w, const T* x, const T* sh, const int64_t* sender,
                            const int64_t* rcv_ptr, const int64_t* rcv_order, const TPTables& t,
                            const T* coeff, T* out, int64_t N, int64_t P, int64_t I, int64_t J,
                            int64_t C, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t K = t.K, row = K * C;
  const int64_t E = rcv_ptr[N];
  const int nt = parallel_threads(n_threads, E * (t.Q + K) * C, 4096);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
    std::vector<T> m(static_cast<size_t>(std::max<int64_t>(t.Q, 1)));
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 16)
#endif
    for (int64_t r = 0; r < N; ++r) {
      T* __restrict acc = out + r * row;
      std::memset(acc, 0, sizeof(T) * row);
      for (int64_t s_ = rcv_ptr[r]; s_ < rcv_ptr[r + 1]; ++s_) {
        if (s_ + kPrefetchDistance < E) {
          const int64_t en = item_at(rcv_order, s_ + kPrefetchDistance);
          prefetch_row(x + sender[en] * I * C, I * C);
          prefetch_row(w + en * P * C, P * C);
          prefetch_row(sh + en * J, J);
        }
        const int64_t e = item_at(rcv_order, s_);
        const T* xs = x + sender[e] * I * C;
        const T* we = w + e * P * C;
        pair_coefficients(t, coeff, sh + e * J, m.data());
        for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) {
          forward_edge_block<T, CB, decltype(rem)::value>(t, m.data(), xs, we, acc, C, u0, cw);
        });
      }
    }
  }
}

// One edge of the backward, channels [u0, u0 + W): adds to grad_w row gwe, grad_x row gxs and the
// per-pair channel sums dq (see channelwise_tp_backward).
template <typename T, int64_t CB, bool REM, bool NEED_W, bool NEED_X, bool NEED_SH>
inline void backward_edge_block(const TPTables& t, const T* __restrict m, const T* __restrict xs,
                                const T* __restrict we, const T* __restrict gr, T* __restrict gwe,
                                T* __restrict gxs, T* __restrict dq, int64_t C, int64_t u0,
                                int64_t cw) {
  const int64_t W = REM ? cw : CB;
  for (int64_t k = 0; k < t.K; ++k) {
    const int64_t q0 = t.pair_ptr[k], q1 = t.pair_ptr[k + 1];
    if (q0 == q1) continue;
    const T* __restrict gk = gr + k * C + u0;
    const T* __restrict wk = we + t.path_of_k[k] * C + u0;
    T gw[CB], tmp[CB];
    if (NEED_X || NEED_SH) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) gw[u] = gk[u] * wk[u];
    }
    if (NEED_W) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) tmp[u] = T(0);
    }
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t i = t.pair_x[q];
      const T* __restrict xi = xs + i * C + u0;
      if (NEED_W) {
        const T mq = m[q];
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) tmp[u] += mq * xi[u];
      }
      if (NEED_X) {
        const T mq = m[q];
        T* __restrict gxi = gxs + i * C + u0;
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) gxi[u] += mq * gw[u];
      }
      if (NEED_SH) {
        T d = T(0);
#ifdef _OPENMP
#pragma omp simd reduction(+ : d)
#endif
        for (int64_t u = 0; u < W; ++u) d += gw[u] * xi[u];
        dq[q] += d;
      }
    }
    if (NEED_W) {
      T* __restrict gwp = gwe + t.path_of_k[k] * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) gwp[u] += gk[u] * tmp[u];
    }
  }
}

// Backward of the forward above for grad_out g [N, K, C]. Any of grad_w [E, P, C], grad_x [A, I, C],
// grad_sh [E, J] may be nullptr (not computed); the others are written entirely. snd_ptr [A + 1] /
// snd_order [E] from sort_by_key on the senders; receiver values in [0, N).
//   grad_w[e, p, u]  = sum_{k in p} g[r, k, u] * sum_q m_e[q] x[s, i_q, u]
//   grad_x[s, i, u]  = sum_{e: sender = s} sum_{q: i_q = i} m_e[q] * g[r, k_q, u] * w[e, p_k, u]
//   grad_sh[e, j]    = sum_{n: entry_sh = j} coeff[n] * sum_u g[r, k_q, u] w[e, p_k, u] x[s, i_q, u]
template <typename T, bool NEED_W, bool NEED_X, bool NEED_SH>
void channelwise_tp_backward_impl(const T* g, const T* w, const T* x, const T* sh,
                                  const int64_t* receiver, const int64_t* snd_ptr,
                                  const int64_t* snd_order, const TPTables& t, const T* coeff,
                                  T* grad_w, T* grad_x, T* grad_sh, int64_t A, int64_t P, int64_t I,
                                  int64_t J, int64_t C, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t K = t.K;
  const int64_t E = snd_ptr[A];
  const int nt = parallel_threads(n_threads, E * (t.Q + K) * C, 4096);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
    std::vector<T> m(static_cast<size_t>(std::max<int64_t>(t.Q, 1)));
    std::vector<T> dq(static_cast<size_t>(std::max<int64_t>(t.Q, 1)));
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 16)
#endif
    for (int64_t s = 0; s < A; ++s) {
      T* gxs = nullptr;
      if (NEED_X) {
        gxs = grad_x + s * I * C;
        std::memset(gxs, 0, sizeof(T) * I * C);
      }
      const T* xs = x + s * I * C;
      for (int64_t s_ = snd_ptr[s]; s_ < snd_ptr[s + 1]; ++s_) {
        if (s_ + kPrefetchDistance < E) {
          const int64_t en = snd_order[s_ + kPrefetchDistance];
          prefetch_row(g + receiver[en] * K * C, K * C);
          prefetch_row(w + en * P * C, P * C);
          prefetch_row(sh + en * J, J);
          if (NEED_W) prefetch_row(grad_w + en * P * C, P * C, true);
        }
        const int64_t e = snd_order[s_];
        const T* gr = g + receiver[e] * K * C;
        const T* we = w + e * P * C;
        if (NEED_W || NEED_X) pair_coefficients(t, coeff, sh + e * J, m.data());
        T* gwe = nullptr;
        if (NEED_W) {
          gwe = grad_w + e * P * C;
          std::memset(gwe, 0, sizeof(T) * P * C);
        }
        if (NEED_SH) std::fill(dq.begin(), dq.end(), T(0));
        for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) {
          backward_edge_block<T, CB, decltype(rem)::value, NEED_W, NEED_X, NEED_SH>(t, m.data(), xs, we, gr, gwe,
                                                                                   gxs, dq.data(), C, u0, cw);
        });
        if (NEED_SH) {
          T* __restrict gshe = grad_sh + e * J;
          for (int64_t j = 0; j < J; ++j) gshe[j] = T(0);
          for (int64_t q = 0; q < t.Q; ++q)
            for (int64_t n = t.entry_ptr[q]; n < t.entry_ptr[q + 1]; ++n)
              gshe[t.entry_sh[n]] += coeff[n] * dq[q];
        }
      }
    }
  }
}

template <typename T>
void channelwise_tp_backward(const T* g, const T* w, const T* x, const T* sh,
                             const int64_t* receiver, const int64_t* snd_ptr,
                             const int64_t* snd_order, const TPTables& t, const T* coeff,
                             T* grad_w, T* grad_x, T* grad_sh, int64_t A, int64_t P, int64_t I,
                             int64_t J, int64_t C, int n_threads) {
  const int mask = (grad_w ? 1 : 0) | (grad_x ? 2 : 0) | (grad_sh ? 4 : 0);
#define NNIP_TP_BWD(W_, X_, SH_)                                                                  \
  channelwise_tp_backward_impl<T, W_, X_, SH_>(g, w, x, sh, receiver, snd_ptr, snd_order, t, coeff, \
                                               grad_w, grad_x, grad_sh, A, P, I, J, C, n_threads)
  switch (mask) {
    case 1: NNIP_TP_BWD(true, false, false); break;
    case 2: NNIP_TP_BWD(false, true, false); break;
    case 3: NNIP_TP_BWD(true, true, false); break;
    case 4: NNIP_TP_BWD(false, false, true); break;
    case 5: NNIP_TP_BWD(true, false, true); break;
    case 6: NNIP_TP_BWD(false, true, true); break;
    case 7: NNIP_TP_BWD(true, true, true); break;
    default: break;  // nothing requested
  }
#undef NNIP_TP_BWD
}

}  // namespace cpu
}  // namespace nnip_scale
