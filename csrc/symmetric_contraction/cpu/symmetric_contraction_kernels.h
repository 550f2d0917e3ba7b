// Raw-pointer CPU kernels of the symmetric contraction (the MACE/ACE product basis with per-element
// weights), its backward and its double backward. No torch headers: unit-tested by ctest. Tables:
// symmetric_contraction/tables.h; conventions and shared helpers: common/kernels.h.
//
// The contraction is a polynomial in the atom's features x, linear in the weights of its element,
// evaluated independently for every channel u. It is table-driven: nothing about ℓ, the correlation
// order or the channel count is compiled in.
//   mono[q]     = mono[parent[q]] * x[var[q]]      (parent[q] = -1: x[var[q]]; var[q] = -1: 1)
//   basis[r]    = sum_{n in entries(r)} coeff[n] * mono[entry_mono[n]]
//   out[k]      = sum_{r: row_out[r] = k} W[z, row_weight[r]] * basis[r]
// q runs over the Q distinct monomials of x (degree 0..ν, each built from its prefix, so
// parent[q] < q), r over the R rows of the sparse product-basis matrix (one (weight, output) pair
// each), n over its nnz nonzero coefficients. Per atom and channel this costs Q + nnz + R
// multiply-adds, against R·(Q + K) for the dense matrix of the torch reference.
//
// Derivatives (per atom and channel; g = grad_out):
//   backward:  G[r] = g[k_r] W[w_r];  T[q] = sum_r coeff G[r];  T flows down the monomial tree in
//              decreasing q:  T[parent] += T[q] x[var],  grad_x[var] += T[q] mono[parent];
//              grad_W[z, w_r] += g[k_r] basis[r]  (summed over the atoms of element z).
//   double backward (the vector-Jacobian product of the backward with cotangents (vx, vW) of
//   (grad_x, grad_W)): with the forward-mode tangent dmono[q] = dmono[parent] x[var] +
//   mono[parent] vx[var] and dbasis[r] = sum coeff dmono,
//     d_grad_out[k] = sum_r W[w_r] dbasis[r] + vW[w_r] basis[r]          (the JVP of the forward)
//     d_W[z, w_r]  += g[k_r] dbasis[r]
//     d_x           = reverse mode through (mono, dmono) with cotangents g[k_r] W[w_r] on dbasis and
//                     g[k_r] vW[w_r] on basis (second derivatives of the monomials).
//
// Layouts (row-major, contiguous): x [N, M, C], W [Z, Wn, C], index [N] (values in [0, Z)),
// out / grad_out [N, K, C], grad_x [N, M, C], grad_W [Z, Wn, C].
//
// Parallelism and determinism: no atomics. Every atom's output and grad_x rows are owned by one
// OpenMP thread. grad_W sums over the atoms of an element: the atoms are grouped by element (a stable
// counting sort) and cut into chunks whose size depends on N only; each chunk accumulates its own
// partial [Wn, C] and the partials of an element are summed in chunk order. So results do not depend
// on the number of threads or the schedule (bitwise).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/kernels.h"
#include "symmetric_contraction/tables.h"

namespace nnip_scale {
namespace cpu {

// mono [Q][CB] of one atom, channels [u0, u0 + W); dmono likewise with the tangent vx (if given).
template <typename T, int64_t CB, bool REM>
inline void sc_monomials(const SCTables& t, const T* __restrict xn, const T* __restrict vxn,
                         T* __restrict mono, T* __restrict dmono, int64_t C, int64_t u0, int64_t cw) {
  const int64_t W = REM ? cw : CB;
  for (int64_t q = 0; q < t.Q; ++q) {
    const int64_t p = t.mono_parent[q], v = t.mono_var[q];
    T* __restrict mq = mono + q * CB;
    T* __restrict dq = dmono ? dmono + q * CB : nullptr;
    if (v < 0) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) mq[u] = T(1);
      if (dq) {
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) dq[u] = T(0);
      }
      continue;
    }
    const T* __restrict xv = xn + v * C + u0;
    if (p < 0) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) mq[u] = xv[u];
      if (dq) {
        const T* __restrict vv = vxn + v * C + u0;
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) dq[u] = vv[u];
      }
      continue;
    }
    const T* __restrict mp = mono + p * CB;
    if (dq) {
      const T* __restrict dp = dmono + p * CB;
      const T* __restrict vv = vxn + v * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) dq[u] = dp[u] * xv[u] + mp[u] * vv[u];
    }
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) mq[u] = mp[u] * xv[u];
  }
}

// b[u] = sum_{n in row r} coeff[n] * m[entry_mono[n]][u]
template <typename T, int64_t CB, bool REM>
inline void sc_row(const SCTables& t, const T* __restrict coeff, const T* __restrict m, int64_t r,
                   T* __restrict b, int64_t cw) {
  const int64_t W = REM ? cw : CB;
  NNIP_SIMD for (int64_t u = 0; u < W; ++u) b[u] = T(0);
  for (int64_t n = t.row_ptr[r]; n < t.row_ptr[r + 1]; ++n) {
    const T c = coeff[n];
    const T* __restrict mq = m + t.entry_mono[n] * CB;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) b[u] += c * mq[u];
  }
}

// T[entry_mono[n]][u] += coeff[n] * G[u] for the coefficients of row r
template <typename T, int64_t CB, bool REM>
inline void sc_row_transpose(const SCTables& t, const T* __restrict coeff, const T* __restrict G,
                             int64_t r, T* __restrict tq, int64_t cw) {
  const int64_t W = REM ? cw : CB;
  for (int64_t n = t.row_ptr[r]; n < t.row_ptr[r + 1]; ++n) {
    const T c = coeff[n];
    T* __restrict tn = tq + t.entry_mono[n] * CB;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) tn[u] += c * G[u];
  }
}

// Forward of one atom, channels [u0, u0 + W): writes out[n, :, u0:u0+W].
template <typename T, int64_t CB, bool REM>
inline void sc_forward_block(const SCTables& t, const T* coeff, const T* xn, const T* wz, T* outn,
                             T* mono, int64_t C, int64_t u0, int64_t cw) {
  const int64_t W = REM ? cw : CB;
  sc_monomials<T, CB, REM>(t, xn, nullptr, mono, nullptr, C, u0, cw);
  for (int64_t k = 0; k < t.K; ++k) {
    T* __restrict o = outn + k * C + u0;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) o[u] = T(0);
  }
  T b[CB];
  for (int64_t r = 0; r < t.R; ++r) {
    sc_row<T, CB, REM>(t, coeff, mono, r, b, cw);
    const T* __restrict w = wz + t.row_weight[r] * C + u0;
    T* __restrict o = outn + t.row_out[r] * C + u0;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) o[u] += w[u] * b[u];
  }
}

// Forward: out [N, K, C] (written entirely); index values in [0, Z) (validated by the caller).
template <typename T>
void sc_forward(const T* x, const T* w, const int64_t* index, const SCTables& t, const T* coeff,
                T* out, int64_t N, int64_t M, int64_t Wn, int64_t C, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  const int nt = parallel_threads(n_threads, N * C * (t.Q + t.nnz + t.R), 16384);
  (void)nt;  // without OpenMP
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
    std::vector<T> mono(static_cast<size_t>(std::max<int64_t>(t.Q, 1) * CB));
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x + n * M * C;
      const T* wz = w + index[n] * Wn * C;
      T* outn = out + n * t.K * C;
      for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) {
        sc_forward_block<T, CB, decltype(rem)::value>(t, coeff, xn, wz, outn, mono.data(), C, u0, cw);
      });
    }
  }
}

// The atoms grouped by element and cut into chunks (sizes depend on N only, so the summation order
// of grad_W never depends on the number of threads).
struct SCChunks {
  std::vector<int64_t> order;       // [N] atom ids grouped by element (stable)
  std::vector<int64_t> begin, end;  // [n_chunks] ranges into order, one element each
  std::vector<int64_t> elem_ptr;    // [Z + 1] chunks of element z: elem_ptr[z] .. elem_ptr[z+1]
};

inline SCChunks sc_chunks(const int64_t* index, int64_t N, int64_t Z) {
  SCChunks c;
  std::vector<int64_t> start(static_cast<size_t>(Z + 1), 0);
  for (int64_t n = 0; n < N; ++n) ++start[index[n] + 1];
  for (int64_t z = 0; z < Z; ++z) start[z + 1] += start[z];
  c.order.resize(static_cast<size_t>(N));
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (int64_t n = 0; n < N; ++n) c.order[next[index[n]]++] = n;
  const int64_t chunk = std::max<int64_t>(16, (N + 255) / 256);
  c.elem_ptr.assign(1, 0);
  for (int64_t z = 0; z < Z; ++z) {
    for (int64_t b = start[z]; b < start[z + 1]; b += chunk) {
      c.begin.push_back(b);
      c.end.push_back(std::min(b + chunk, start[z + 1]));
    }
    c.elem_ptr.push_back(static_cast<int64_t>(c.begin.size()));
  }
  return c;
}

// grad_W [Z, Wn, C] = sum over the chunks of each element of partial [n_chunks, Wn, C], in order.
template <typename T>
void sc_reduce_chunks(const SCChunks& c, const T* partial, T* grad_w, int64_t Z, int64_t Wn, int64_t C,
                      int nt) {
  const int64_t rows = Z * Wn;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
  for (int64_t zw = 0; zw < rows; ++zw) {
    const int64_t z = zw / Wn, wr = zw - z * Wn;
    T* __restrict dst = grad_w + zw * C;
    for (int64_t u = 0; u < C; ++u) dst[u] = T(0);
    for (int64_t ch = c.elem_ptr[z]; ch < c.elem_ptr[z + 1]; ++ch) {
      const T* __restrict src = partial + (ch * Wn + wr) * C;
      NNIP_SIMD for (int64_t u = 0; u < C; ++u) dst[u] += src[u];
    }
  }
}

// The chunked atom loop of the backward and the double backward: on nt threads, each chunk of ch (dynamic
// schedule) runs atom(n, wp, state) for its atoms in order, where wp is the chunk's partial
// weight-gradient rows [Wn, C] (zeroed first; nullptr when want_w is false) and state the calling
// thread's scratch (make_state(), once per thread). Then the partials are summed into grad_w in chunk
// order (sc_reduce_chunks), so the result does not depend on nt.
template <typename T, typename MakeState, typename Atom>
void sc_chunked_atoms(const SCChunks& ch, bool want_w, T* grad_w, int64_t Z, int64_t Wn, int64_t C, int nt,
                      MakeState make_state, Atom atom) {
  const int64_t n_chunks = static_cast<int64_t>(ch.begin.size());
  std::vector<T> partial(want_w ? static_cast<size_t>(n_chunks * Wn * C) : 0);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
    auto state = make_state();
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t c = 0; c < n_chunks; ++c) {
      T* wp = nullptr;
      if (want_w) {
        wp = partial.data() + c * Wn * C;
        std::memset(wp, 0, sizeof(T) * Wn * C);
      }
      for (int64_t s = ch.begin[c]; s < ch.end[c]; ++s) atom(ch.order[s], wp, state);
    }
  }
  (void)nt;
  if (want_w) sc_reduce_chunks(ch, partial.data(), grad_w, Z, Wn, C, nt);
}

// Backward of one atom, channels [u0, u0 + W): grad_x row gxn (written) and the element's partial
// grad_W rows gwp (accumulated); either may be nullptr.
template <typename T, int64_t CB, bool REM>
inline void sc_backward_block(const SCTables& t, const T* coeff, const T* gn, const T* xn, const T* wz,
                              T* gxn, T* gwp, T* mono, T* tq, int64_t M, int64_t C, int64_t u0,
                              int64_t cw) {
  const int64_t W = REM ? cw : CB;
  sc_monomials<T, CB, REM>(t, xn, nullptr, mono, nullptr, C, u0, cw);
  if (gxn) std::memset(tq, 0, sizeof(T) * t.Q * CB);
  T b[CB], G[CB];
  for (int64_t r = 0; r < t.R; ++r) {
    const T* __restrict gk = gn + t.row_out[r] * C + u0;
    const int64_t wr = t.row_weight[r];
    if (gxn) {
      const T* __restrict w = wz + wr * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) G[u] = gk[u] * w[u];
      sc_row_transpose<T, CB, REM>(t, coeff, G, r, tq, cw);
    }
    if (gwp) {
      sc_row<T, CB, REM>(t, coeff, mono, r, b, cw);
      T* __restrict gw = gwp + wr * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) gw[u] += gk[u] * b[u];
    }
  }
  if (!gxn) return;
  for (int64_t m = 0; m < M; ++m) {
    T* __restrict gx = gxn + m * C + u0;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) gx[u] = T(0);
  }
  for (int64_t q = t.Q - 1; q >= 0; --q) {
    const int64_t p = t.mono_parent[q], v = t.mono_var[q];
    if (v < 0) continue;
    const T* __restrict tqq = tq + q * CB;
    T* __restrict gx = gxn + v * C + u0;
    if (p < 0) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) gx[u] += tqq[u];
      continue;
    }
    const T* __restrict xv = xn + v * C + u0;
    const T* __restrict mp = mono + p * CB;
    T* __restrict tp = tq + p * CB;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) {
      tp[u] += tqq[u] * xv[u];
      gx[u] += tqq[u] * mp[u];
    }
  }
}

// Backward for grad_out g [N, K, C]: grad_x [N, M, C] and grad_w [Z, Wn, C], either may be nullptr
// (not computed); the others are written entirely.
template <typename T>
void sc_backward(const T* g, const T* x, const T* w, const int64_t* index, const SCTables& t,
                 const T* coeff, T* grad_x, T* grad_w, int64_t N, int64_t M, int64_t Z, int64_t Wn,
                 int64_t C, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  if (!grad_x && !grad_w) return;
  const int nt = parallel_threads(n_threads, N * C * (3 * t.Q + 2 * t.nnz + t.R), 16384);
  struct Scratch {
    std::vector<T> mono, tq;
  };
  const size_t qs = static_cast<size_t>(std::max<int64_t>(t.Q, 1) * CB);
  sc_chunked_atoms<T>(
      sc_chunks(index, N, Z), grad_w != nullptr, grad_w, Z, Wn, C, nt,
      [&] { return Scratch{std::vector<T>(qs), std::vector<T>(grad_x ? qs : 0)}; },
      [&](int64_t n, T* gwp, Scratch& sc) {
        const T* gn = g + n * t.K * C;
        const T* xn = x + n * M * C;
        const T* wz = w + index[n] * Wn * C;
        T* gxn = grad_x ? grad_x + n * M * C : nullptr;
        for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) {
          sc_backward_block<T, CB, decltype(rem)::value>(t, coeff, gn, xn, wz, gxn, gwp, sc.mono.data(),
                                                         sc.tq.data(), M, C, u0, cw);
        });
      });
}

// Buffers of one thread of the double backward ([Q][CB] each, empty when not needed).
template <typename T>
struct SCDoubleBuffers {
  std::vector<T> mono, dmono, tm, tdm;
};

// Double backward of one atom, channels [u0, u0 + W). vxn / vwz: the tangents (cotangents of
// grad_x / grad_W), nullptr when absent; dgn (written), dxn (written), dwp (accumulated) may be
// nullptr when not requested.
template <typename T, int64_t CB, bool REM>
inline void sc_double_backward_block(const SCTables& t, const T* coeff, const T* gn, const T* xn,
                                     const T* wz, const T* vxn, const T* vwz, T* dgn, T* dxn, T* dwp,
                                     SCDoubleBuffers<T>& buf, int64_t M, int64_t C, int64_t u0,
                                     int64_t cw) {
  const int64_t W = REM ? cw : CB;
  const bool hvx = vxn != nullptr, hvw = vwz != nullptr;
  T* mono = buf.mono.data();
  T* dmono = hvx ? buf.dmono.data() : nullptr;
  T* tm = buf.tm.data();
  T* tdm = buf.tdm.data();
  sc_monomials<T, CB, REM>(t, xn, vxn, mono, dmono, C, u0, cw);
  if (dgn) {
    for (int64_t k = 0; k < t.K; ++k) {
      T* __restrict o = dgn + k * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) o[u] = T(0);
    }
  }
  const bool need_tm = dxn && (hvx || hvw), need_tdm = dxn && hvx;
  if (need_tm) std::memset(tm, 0, sizeof(T) * t.Q * CB);
  if (need_tdm) std::memset(tdm, 0, sizeof(T) * t.Q * CB);
  T b[CB], db[CB], G[CB];
  for (int64_t r = 0; r < t.R; ++r) {
    const int64_t k = t.row_out[r], wr = t.row_weight[r];
    const T* __restrict w = wz + wr * C + u0;
    const T* __restrict vw = hvw ? vwz + wr * C + u0 : nullptr;
    const T* __restrict gk = gn ? gn + k * C + u0 : nullptr;
    if (hvx && (dgn || dwp)) sc_row<T, CB, REM>(t, coeff, dmono, r, db, cw);
    if (dgn) {
      T* __restrict o = dgn + k * C + u0;
      if (hvx) {
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) o[u] += w[u] * db[u];
      }
      if (hvw) {
        sc_row<T, CB, REM>(t, coeff, mono, r, b, cw);
        NNIP_SIMD for (int64_t u = 0; u < W; ++u) o[u] += vw[u] * b[u];
      }
    }
    if (dwp && hvx) {
      T* __restrict dw = dwp + wr * C + u0;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) dw[u] += gk[u] * db[u];
    }
    if (need_tdm) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) G[u] = gk[u] * w[u];
      sc_row_transpose<T, CB, REM>(t, coeff, G, r, tdm, cw);
    }
    if (dxn && hvw) {
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) G[u] = gk[u] * vw[u];
      sc_row_transpose<T, CB, REM>(t, coeff, G, r, tm, cw);
    }
  }
  if (!dxn) return;
  for (int64_t m = 0; m < M; ++m) {
    T* __restrict dx = dxn + m * C + u0;
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) dx[u] = T(0);
  }
  if (!need_tm) return;
  for (int64_t q = t.Q - 1; q >= 0; --q) {
    const int64_t p = t.mono_parent[q], v = t.mono_var[q];
    if (v < 0) continue;
    T* __restrict dx = dxn + v * C + u0;
    const T* __restrict tmq = tm + q * CB;
    if (p < 0) {  // mono = x[v], dmono = vx[v]: only mono depends on x
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) dx[u] += tmq[u];
      continue;
    }
    const T* __restrict xv = xn + v * C + u0;
    const T* __restrict mp = mono + p * CB;
    T* __restrict tmp = tm + p * CB;
    if (hvx) {  // dmono[q] = dmono[p] x[v] + mono[p] vx[v]
      const T* __restrict vv = vxn + v * C + u0;
      const T* __restrict dp = dmono + p * CB;
      const T* __restrict tdq = tdm + q * CB;
      T* __restrict tdp = tdm + p * CB;
      NNIP_SIMD for (int64_t u = 0; u < W; ++u) {
        tdp[u] += tdq[u] * xv[u];
        dx[u] += tdq[u] * dp[u];
        tmp[u] += tdq[u] * vv[u];
      }
    }
    NNIP_SIMD for (int64_t u = 0; u < W; ++u) {  // mono[q] = mono[p] x[v]
      tmp[u] += tmq[u] * xv[u];
      dx[u] += tmq[u] * mp[u];
    }
  }
}

// Double backward: the vector-Jacobian product of sc_backward (with grad_out g, features x, weights
// w) for the cotangents vx [N, M, C] of grad_x and vw [Z, Wn, C] of grad_W (either may be nullptr:
// zero). Outputs d_g [N, K, C] (the JVP of the forward), d_x [N, M, C], d_w [Z, Wn, C]; any may be
// nullptr (not requested); the others are written entirely. g may be nullptr when neither d_x nor
// d_w is requested.
template <typename T>
void sc_double_backward(const T* g, const T* x, const T* w, const int64_t* index, const T* vx,
                        const T* vw, const SCTables& t, const T* coeff, T* d_g, T* d_x, T* d_w,
                        int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C, int n_threads) {
  constexpr int64_t CB = channel_block<T>();
  if (!d_g && !d_x && !d_w) return;
  if (!vx && d_w) {  // d_W = sum g dbasis is zero without a tangent of x
    std::fill(d_w, d_w + Z * Wn * C, T(0));
    d_w = nullptr;
    if (!d_g && !d_x) return;
  }
  const int nt = parallel_threads(n_threads, N * C * (6 * t.Q + 4 * t.nnz + t.R), 16384);
  const size_t qs = static_cast<size_t>(std::max<int64_t>(t.Q, 1) * CB);
  sc_chunked_atoms<T>(
      sc_chunks(index, N, Z), d_w != nullptr, d_w, Z, Wn, C, nt,
      [&] {
        SCDoubleBuffers<T> buf;
        buf.mono.resize(qs);
        if (vx) buf.dmono.resize(qs);
        if (d_x) buf.tm.resize(qs);
        if (d_x && vx) buf.tdm.resize(qs);
        return buf;
      },
      [&](int64_t n, T* dwp, SCDoubleBuffers<T>& buf) {
        const T* gn = g ? g + n * t.K * C : nullptr;
        const T* xn = x + n * M * C;
        const T* wz = w + index[n] * Wn * C;
        const T* vxn = vx ? vx + n * M * C : nullptr;
        const T* vwz = vw ? vw + index[n] * Wn * C : nullptr;
        T* dgn = d_g ? d_g + n * t.K * C : nullptr;
        T* dxn = d_x ? d_x + n * M * C : nullptr;
        for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) {
          sc_double_backward_block<T, CB, decltype(rem)::value>(t, coeff, gn, xn, wz, vxn, vwz, dgn, dxn, dwp, buf,
                                                                M, C, u0, cw);
        });
      });
}


}  // namespace cpu
}  // namespace nnip_scale
