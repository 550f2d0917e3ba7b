// Random symmetric-contraction tables for the C++ tests of the family (CPU kernels, the CUDA kernels on a
// GPU and in host emulation): a monomial tree of degree <= 3 with a constant monomial, and random sparse
// rows (the kernels are table-driven: nothing about ℓ is compiled in).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "common/kernels.h"
#include "symmetric_contraction/tables.h"

struct Case {
  int64_t M = 4, K = 3, Wn = 5, Z = 3;
  std::vector<int64_t> parent, var, row_ptr{0}, entry_mono, row_out, row_weight;
  std::vector<double> coeff;
  nnip_scale::SCTables tables() const {
    nnip_scale::SCTables t;
    t.Q = static_cast<int64_t>(parent.size());
    t.R = static_cast<int64_t>(row_out.size());
    t.nnz = static_cast<int64_t>(entry_mono.size());
    t.K = K;
    t.mono_parent = parent.data();
    t.mono_var = var.data();
    t.row_ptr = row_ptr.data();
    t.entry_mono = entry_mono.data();
    t.row_out = row_out.data();
    t.row_weight = row_weight.data();
    return t;
  }
};

// `per_degree` monomials of degree 2 and of degree 3 over M x rows; `rows` rows of 1-4 coefficients
// (row `empty_row` has none), whose outputs are non-decreasing with `rows_by_output` (as the plan orders
// them) and random otherwise (the kernels accept any order).
inline Case random_case(std::mt19937_64& rng, int64_t M = 4, int64_t K = 3, int64_t Wn = 5, int64_t Z = 3,
                        int per_degree = 6, int64_t rows = 9, bool rows_by_output = false, int64_t empty_row = 4) {
  Case c;
  c.M = M;
  c.K = K;
  c.Wn = Wn;
  c.Z = Z;
  std::uniform_real_distribution<double> val(-1, 1);
  c.parent.push_back(-1);  // the constant monomial
  c.var.push_back(-1);
  for (int64_t m = 0; m < M; ++m) {  // degree 1
    c.parent.push_back(-1);
    c.var.push_back(m);
  }
  for (int d = 2; d <= 3; ++d) {
    const int64_t lo = d == 2 ? 1 : 1 + M, hi = static_cast<int64_t>(c.parent.size());
    for (int i = 0; i < per_degree; ++i) {
      c.parent.push_back(lo + static_cast<int64_t>(rng() % (hi - lo)));
      c.var.push_back(static_cast<int64_t>(rng() % M));
    }
  }
  const int64_t Q = static_cast<int64_t>(c.parent.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n_entries = r == empty_row ? 0 : 1 + static_cast<int64_t>(rng() % 4);
    for (int64_t n = 0; n < n_entries; ++n) {
      c.entry_mono.push_back(static_cast<int64_t>(rng() % Q));
      c.coeff.push_back(val(rng));
    }
    c.row_ptr.push_back(static_cast<int64_t>(c.entry_mono.size()));
    c.row_out.push_back(rows_by_output ? r * K / rows : static_cast<int64_t>(rng() % K));
    c.row_weight.push_back(static_cast<int64_t>(rng() % Wn));
  }
  return c;
}

// The atoms grouped by element, as the CUDA glue does on the device: elem_ptr [Z + 1], order [N] (stable).
inline void group_by_element(const std::vector<int64_t>& index, int64_t Z, std::vector<int64_t>& elem_ptr,
                             std::vector<int64_t>& order) {
  elem_ptr.assign(static_cast<size_t>(Z + 1), 0);
  order.assign(index.size(), 0);
  nnip_scale::cpu::sort_by_key(index.data(), static_cast<int64_t>(index.size()), Z, elem_ptr.data(), order.data());
}
