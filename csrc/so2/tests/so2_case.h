// Random problems of the eSEN rotation kernels and their references from the CPU kernels
// (csrc/so2/cpu/so2_kernels.h), shared by the host-emulated CUDA test (test_so2_cuda_emulated.cpp) and
// the GPU test (test_cuda_so2_kernels.cpp); the CPU kernel test (test_so2_kernels.cpp) uses its
// block_rows. Torch-free.
#pragma once
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "so2/cpu/so2_kernels.h"

namespace so2_case {

// (ℓ, offset) per row of the m-major layout of (lmax, mmax), entries grouped by degree (as
// nnip_scale.ops.so2.so2_block_rows); *NB gets the compact row length.
inline std::vector<int64_t> block_rows(int64_t lmax, int64_t mmax, int64_t* NB) {
  std::vector<int64_t> ells;
  for (int64_t l = 0; l <= lmax; ++l) ells.push_back(l);
  for (int64_t m = 1; m <= mmax; ++m)
    for (int sign = 0; sign < 2; ++sign)
      for (int64_t l = m; l <= lmax; ++l) ells.push_back(l);
  std::vector<int64_t> rows(2 * ells.size());
  int64_t off = 0;
  for (int64_t l = 0; l <= lmax; ++l)
    for (size_t r = 0; r < ells.size(); ++r)
      if (ells[r] == l) {
        rows[2 * r] = l;
        rows[2 * r + 1] = off;
        off += 2 * l + 1;
      }
  *NB = off;
  return rows;
}

// Stable CSR of `key` over [0, n) as the CUDA glue builds it (a stable sort and a searchsorted): keys
// outside [0, n) are in no segment. Equals so2::sort_by_key when every key is valid. `order` keeps at
// least one entry (a valid device allocation; the kernels never read past ptr[n]).
inline void csr_of(const std::vector<int64_t>& key, int64_t n, std::vector<int64_t>* ptr,
                   std::vector<int64_t>* order) {
  ptr->assign(n + 1, 0);
  order->clear();
  for (int64_t a = 0; a < n; ++a) {
    for (size_t e = 0; e < key.size(); ++e)
      if (key[e] == a) order->push_back(static_cast<int64_t>(e));
    (*ptr)[a + 1] = static_cast<int64_t>(order->size());
  }
  order->resize(std::max<size_t>(order->size(), 1));
}

// One problem: x [A, K, C], compact Wigner rows w [E, NB], edge cotangents y [E, R, S·C], endpoint indices
// i0/i1 [E] (atom A-1 has no edges; with `bad`, some lie outside [0, A)), the CSRs of the indices, and the
// expected gather [E, R, S·C], scatter [A, K, C] and Wigner gradient [E, NB]. With bad indices the
// expected values treat an out-of-range endpoint as adding nothing (the CUDA contract): the CPU kernels
// run with such an index replaced by 0 and its half of the edge cotangent / gathered row zeroed.
struct Problem {
  int64_t lmax = 0, mmax = 0, C = 0, A = 0, E = 0, K = 0, R = 0, NB = 0;
  int S = 1;
  std::vector<int64_t> rows, i0, i1, p0, o0, p1, o1;
  std::vector<double> x, w, y, gather, scatter, wgrad;
};

inline Problem make_problem(uint64_t seed, int64_t lmax, int64_t mmax, int64_t C, int S, int64_t A, int64_t E,
                            bool bad) {
  Problem p;
  p.lmax = lmax;
  p.mmax = mmax;
  p.C = C;
  p.S = S;
  p.A = A;
  p.E = E;
  p.K = (lmax + 1) * (lmax + 1);
  p.rows = block_rows(lmax, mmax, &p.NB);
  p.R = static_cast<int64_t>(p.rows.size() / 2);
  const int64_t K = p.K, R = p.R, NB = p.NB, SC = S * C;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  p.x.resize(A * K * C);
  p.w.resize(E * NB);
  p.y.resize(E * R * SC);
  for (auto* v : {&p.x, &p.w, &p.y})
    for (auto& e : *v) e = val(rng);
  const int64_t hi = std::max<int64_t>(A - 1, 1);
  p.i0.resize(E);
  p.i1.resize(E);
  for (auto& v : p.i0) v = static_cast<int64_t>(rng() % hi);
  for (auto& v : p.i1) v = static_cast<int64_t>(rng() % hi);
  if (bad && E > 7) {
    p.i0[2] = -1;
    p.i1[5] = A;
    p.i0[7] = A + 40;
    p.i1[7] = -3;
  }
  // the reference's view: bad indices -> 0, their halves of the edge cotangent zeroed
  std::vector<int64_t> c0(p.i0), c1(p.i1);
  std::vector<double> y_ref(p.y);
  std::vector<char> drop(E * S, 0);  // (e, s) with an endpoint outside [0, A)
  for (int64_t e = 0; e < E; ++e)
    for (int s = 0; s < S; ++s) {
      int64_t& v = s == 0 ? c0[e] : c1[e];
      if (v >= 0 && v < A) continue;
      v = 0;
      drop[e * S + s] = 1;
      for (int64_t r = 0; r < R; ++r) std::fill_n(y_ref.begin() + (e * R + r) * SC + s * C, C, 0.0);
    }
  nnip_scale::so2::BlockRows b;
  b.R = R;
  b.rows = p.rows.data();
  const int64_t* ip[2] = {c0.data(), c1.data()};
  p.gather.assign(E * R * SC, 0.0);
  nnip_scale::so2::rotate_gather<double>(p.x.data(), p.w.data(), ip, S, b, p.gather.data(), E, K, C, NB, 1);
  for (int64_t e = 0; e < E; ++e)
    for (int s = 0; s < S; ++s)
      if (drop[e * S + s])
        for (int64_t r = 0; r < R; ++r) std::fill_n(p.gather.begin() + (e * R + r) * SC + s * C, C, 0.0);
  csr_of(p.i0, A, &p.p0, &p.o0);
  csr_of(p.i1, A, &p.p1, &p.o1);
  const int64_t* pp[2] = {p.p0.data(), p.p1.data()};
  const int64_t* op[2] = {p.o0.data(), p.o1.data()};
  p.scatter.assign(A * K * C, 0.0);
  nnip_scale::so2::rotate_scatter<double>(p.y.data(), p.w.data(), pp, op, S, b, p.scatter.data(), A, E, K, C, NB, 1);
  p.wgrad.assign(E * NB, 0.0);
  nnip_scale::so2::wigner_grad<double>(y_ref.data(), p.x.data(), ip, S, b, p.wgrad.data(), E, K, C, NB, 1);
  return p;
}

}  // namespace so2_case
