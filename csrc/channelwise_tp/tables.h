// The sparse Clebsch–Gordan tables of the channel-wise tensor product, shared by its CPU kernels
// (channelwise_tp/cpu/) and CUDA kernels (channelwise_tp/cuda/), and their host-side validation. No
// torch headers (see csrc/common/kernels.h for the conventions).
#pragma once
#include <cstdint>

#include "common/kernels.h"

namespace nnip_scale {

// The sparse Clebsch–Gordan tables of one channel-wise product (built from the plan in Python).
struct TPTables {
  int64_t K = 0;                       // output rows
  int64_t Q = 0;                       // (output row, x row) pairs
  int64_t nnz = 0;                     // nonzero coefficients
  const int64_t* path_of_k = nullptr;  // [K] path (weight row) of each output row
  const int64_t* pair_ptr = nullptr;   // [K + 1] pairs of output row k: pair_ptr[k] .. pair_ptr[k+1]
  const int64_t* pair_x = nullptr;     // [Q] x row of each pair
  const int64_t* entry_ptr = nullptr;  // [Q + 1] coefficients of pair q: entry_ptr[q] .. entry_ptr[q+1]
  const int64_t* entry_sh = nullptr;   // [nnz] harmonic j of each coefficient
};

// m_e[q] = sum_{n in entries(q)} coeff[n] * sh_e[entry_sh[n]]: the channel-independent factor of pair q
// on one edge (sh_e: that edge's J harmonics), summed in entry order.
template <typename T>
NNIP_HOST_DEVICE inline T pair_coefficient(const TPTables& t, const T* coeff, const T* sh_e, int64_t q) {
  T s = T(0);
  for (int64_t n = t.entry_ptr[q]; n < t.entry_ptr[q + 1]; ++n) s += coeff[n] * sh_e[t.entry_sh[n]];
  return s;
}

// Which table entry is inconsistent, or nullptr when the tables are valid for P paths, I x rows and
// J harmonics (checked on every call: O(K + Q + nnz), negligible next to the product).
inline const char* check_tables(const TPTables& t, int64_t P, int64_t I, int64_t J) {
  if (t.pair_ptr[0] != 0 || t.pair_ptr[t.K] != t.Q) return "pair_ptr must start at 0 and end at len(pair_x)";
  if (t.entry_ptr[0] != 0 || t.entry_ptr[t.Q] != t.nnz)
    return "entry_ptr must start at 0 and end at len(entry_sh)";
  for (int64_t k = 0; k < t.K; ++k) {
    if (t.pair_ptr[k + 1] < t.pair_ptr[k]) return "pair_ptr must be non-decreasing";
    if (t.path_of_k[k] < 0 || t.path_of_k[k] >= P) return "path_of_k has entries outside [0, P)";
  }
  for (int64_t q = 0; q < t.Q; ++q) {
    if (t.entry_ptr[q + 1] < t.entry_ptr[q]) return "entry_ptr must be non-decreasing";
    if (t.pair_x[q] < 0 || t.pair_x[q] >= I) return "pair_x has entries outside [0, I)";
  }
  for (int64_t n = 0; n < t.nnz; ++n)
    if (t.entry_sh[n] < 0 || t.entry_sh[n] >= J) return "entry_sh has entries outside [0, J)";
  return nullptr;
}

}  // namespace nnip_scale
