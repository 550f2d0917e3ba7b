// The sparse product-basis tables of the symmetric contraction, shared by its CPU kernels
// (symmetric_contraction/cpu/) and CUDA kernels (symmetric_contraction/cuda/), and their host-side
// validation. No torch headers (see csrc/common/kernels.h for the conventions).
#pragma once
#include <cstdint>

namespace nnip_scale {

// The sparse tables of one symmetric contraction (built from the plan in Python).
struct SCTables {
  int64_t Q = 0;                         // monomials
  int64_t R = 0;                         // rows (weight, output) of the product-basis matrix
  int64_t nnz = 0;                       // nonzero coefficients
  int64_t K = 0;                         // output rows
  const int64_t* mono_parent = nullptr;  // [Q] monomial this one extends (< q), or -1
  const int64_t* mono_var = nullptr;     // [Q] x row multiplied in, or -1 for the constant 1
  const int64_t* row_ptr = nullptr;      // [R + 1] coefficients of row r: row_ptr[r] .. row_ptr[r+1]
  const int64_t* entry_mono = nullptr;   // [nnz] monomial of each coefficient
  const int64_t* row_out = nullptr;      // [R] output row k of each row
  const int64_t* row_weight = nullptr;   // [R] weight row w of each row
};

// Which table entry is inconsistent, or nullptr when the tables are valid for M x rows and Wn weight
// rows (checked on every call: O(Q + R + nnz), negligible next to the contraction).
inline const char* check_sc_tables(const SCTables& t, int64_t M, int64_t Wn) {
  if (t.row_ptr[0] != 0 || t.row_ptr[t.R] != t.nnz) return "row_ptr must start at 0 and end at len(entry_mono)";
  for (int64_t q = 0; q < t.Q; ++q) {
    if (t.mono_parent[q] < -1 || t.mono_parent[q] >= q)
      return "mono_parent[q] must be -1 or a monomial before q";
    if (t.mono_var[q] < -1 || t.mono_var[q] >= M) return "mono_var has entries outside [-1, M)";
    if (t.mono_parent[q] >= 0 && t.mono_var[q] < 0)
      return "mono_var must name an x row wherever mono_parent is set";
  }
  for (int64_t r = 0; r < t.R; ++r) {
    if (t.row_ptr[r + 1] < t.row_ptr[r]) return "row_ptr must be non-decreasing";
    if (t.row_out[r] < 0 || t.row_out[r] >= t.K) return "row_out has entries outside [0, n_out)";
    if (t.row_weight[r] < 0 || t.row_weight[r] >= Wn) return "row_weight has entries outside [0, Wn)";
  }
  for (int64_t n = 0; n < t.nnz; ++n)
    if (t.entry_mono[n] < 0 || t.entry_mono[n] >= t.Q) return "entry_mono has entries outside [0, Q)";
  return nullptr;
}

}  // namespace nnip_scale
