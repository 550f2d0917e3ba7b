// Argument checks, table pointers and output allocation shared by the CPU and CUDA glue of
// nnip_scale::symmetric_contraction, its backward and its double backward (step "checks" of
// csrc/common/kernels.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/tensor_checks.h"
#include "symmetric_contraction/tables.h"

namespace nnip_scale {
namespace sc_glue {

constexpr const char* kFwd = "nnip_scale::symmetric_contraction";
constexpr const char* kBwd = "nnip_scale::symmetric_contraction_backward";
constexpr const char* kDbl = "nnip_scale::symmetric_contraction_double_backward";

// The product-basis tables of one call: raw pointers into contiguous copies that live as long as this.
struct Tables {
  checks::Pinned pins;
  at::Tensor entry_coeff;  // contiguous, the dtype of x
  SCTables t;
};

// Checks the table tensors (dtype, device, lengths, n_out >= 0) and points the returned tables at them.
// With `validate` (CPU: host memory) also their values against x's rows and Wn weight rows; the CUDA glue
// cannot without a device-to-host copy.
inline Tables make_tables(const char* op, const at::Tensor& x, const at::Tensor& mono_parent,
                          const at::Tensor& mono_var, const at::Tensor& row_ptr, const at::Tensor& entry_mono,
                          const at::Tensor& entry_coeff, const at::Tensor& row_out, const at::Tensor& row_weight,
                          int64_t n_out, int64_t Wn, bool validate) {
  using namespace checks;
  check_long(mono_parent, op, "mono_parent", x);
  check_long(mono_var, op, "mono_var", x);
  check_long(row_ptr, op, "row_ptr", x);
  check_long(entry_mono, op, "entry_mono", x);
  check_float(entry_coeff, op, "entry_coeff", 1, x);
  check_long(row_out, op, "row_out", x);
  check_long(row_weight, op, "row_weight", x);
  TORCH_CHECK(n_out >= 0, op, ": n_out must be >= 0, got ", n_out);
  const int64_t Q = mono_parent.size(0), R = row_out.size(0), nnz = entry_mono.size(0);
  check_len(mono_var, Q, op, "mono_var", "len(mono_parent)");
  check_len(row_ptr, R + 1, op, "row_ptr", "len(row_out) + 1");
  check_len(row_weight, R, op, "row_weight", "len(row_out)");
  check_len(entry_coeff, nnz, op, "entry_coeff", "len(entry_mono)");
  Tables tb;
  tb.t.Q = Q;
  tb.t.R = R;
  tb.t.nnz = nnz;
  tb.t.K = n_out;
  tb.t.mono_parent = tb.pins.ptr<int64_t>(mono_parent);
  tb.t.mono_var = tb.pins.ptr<int64_t>(mono_var);
  tb.t.row_ptr = tb.pins.ptr<int64_t>(row_ptr);
  tb.t.entry_mono = tb.pins.ptr<int64_t>(entry_mono);
  tb.t.row_out = tb.pins.ptr<int64_t>(row_out);
  tb.t.row_weight = tb.pins.ptr<int64_t>(row_weight);
  tb.entry_coeff = entry_coeff.contiguous();
  if (validate) {
    const char* bad = check_sc_tables(tb.t, x.size(1), Wn);
    TORCH_CHECK(bad == nullptr, op, ": inconsistent product-basis tables: ", bad ? bad : "");
  }
  return tb;
}

// x [N, M, C], weights [Z, Wn, C], index int64 [N] (its values are range-checked by the CPU glue only).
inline void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index) {
  using namespace checks;
  check_features(x, op, "[N, M, C]");
  check_float(weights, op, "weights", 3, x);
  TORCH_CHECK(weights.size(2) == x.size(2), op, ": weights must have C = x.size(2) = ", x.size(2),
              " channels, got ", weights.size(2));
  check_long(index, op, "index", x);
  check_len(index, x.size(0), op, "index", "N = x.size(0)");
}

// grad_out [N, n_out, C] of the backward and the double backward.
inline void check_grad_out(const char* op, const at::Tensor& g, const at::Tensor& x, int64_t n_out) {
  checks::check_float(g, op, "grad_out", 3, x);
  TORCH_CHECK(g.size(0) == x.size(0) && g.size(1) == n_out && g.size(2) == x.size(2), op, ": grad_out must be [N=",
              x.size(0), ", n_out=", n_out, ", C=", x.size(2), "], got ", g.sizes());
}

// An output of `rows` rows (0 when not requested: distinct, never aliased) and the trailing dims of `like`.
inline at::Tensor alloc_out(bool need, int64_t rows, int64_t dim1, const at::Tensor& x) {
  return at::empty({need ? rows : 0, dim1, x.size(2)}, x.options());
}

// The device-specific part of the checks: the CPU glue (host memory) also range-checks index and validates
// the table values; the CUDA glue cannot without a device-to-host copy (its kernels give atoms outside
// [0, Z) zero rows instead).
struct Validation {
  bool values = false;
  int n_threads = 1;
};

// One call of any op of the family after its checks: the tables and contiguous inputs (g: grad_out, vx / vw:
// the tangents, undefined when absent or not used by the op).
struct Call {
  Tables tb;
  at::Tensor x, w, index, g, vx, vw;
  int64_t N = 0, M = 0, C = 0, Z = 0, Wn = 0;
};

inline Call prepare(const char* op, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
                    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
                    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
                    const at::Tensor& row_weight, int64_t n_out, Validation v) {
  check_inputs(op, x, weights, index);
  if (v.values) checks::check_index_range(index, weights.size(0), op, "index", "weights.size(0)", v.n_threads);
  Call c;
  c.tb = make_tables(op, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out,
                     weights.size(1), v.values);
  c.x = x.contiguous();
  c.w = weights.contiguous();
  c.index = index.contiguous();
  c.N = x.size(0);
  c.M = x.size(1);
  c.C = x.size(2);
  c.Z = weights.size(0);
  c.Wn = weights.size(1);
  return c;
}

// The backward's call (with grad_out) and its outputs (grad_x, grad_weights); `trivial`: the outputs are
// all zero (already zeroed: no kernel to run).
inline Call prepare_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights,
                             const at::Tensor& index, const at::Tensor& mono_parent, const at::Tensor& mono_var,
                             const at::Tensor& row_ptr, const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
                             const at::Tensor& row_out, const at::Tensor& row_weight, int64_t n_out, bool need_x,
                             bool need_weights, Validation v, at::Tensor& gx, at::Tensor& gw, bool& trivial) {
  Call c = prepare(kBwd, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                   row_weight, n_out, v);
  check_grad_out(kBwd, grad_out, x, n_out);
  c.g = grad_out.contiguous();
  gx = alloc_out(need_x, c.N, c.M, x);
  gw = alloc_out(need_weights, c.Z, c.Wn, x);
  trivial = c.N == 0 || c.C == 0 || (!need_x && !need_weights);
  if (trivial) {
    gx.zero_();
    gw.zero_();
  }
  return c;
}

// The double backward's call (with grad_out and the tangents) and its outputs (d_grad_out, d_x, d_weights);
// `trivial`: the outputs are all zero (already zeroed: no kernel to run).
inline Call prepare_double_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights,
                                    const at::Tensor& index, const std::optional<at::Tensor>& tangent_x,
                                    const std::optional<at::Tensor>& tangent_weights, const at::Tensor& mono_parent,
                                    const at::Tensor& mono_var, const at::Tensor& row_ptr,
                                    const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
                                    const at::Tensor& row_out, const at::Tensor& row_weight, int64_t n_out,
                                    bool need_grad_out, bool need_x, bool need_weights, Validation v, at::Tensor& dg,
                                    at::Tensor& dx, at::Tensor& dw, bool& trivial) {
  Call c = prepare(kDbl, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                   row_weight, n_out, v);
  check_grad_out(kDbl, grad_out, x, n_out);
  c.g = grad_out.contiguous();
  c.vx = checks::check_tangent(tangent_x, x, x, kDbl, "tangent_x", "x");
  c.vw = checks::check_tangent(tangent_weights, weights, x, kDbl, "tangent_weights", "weights");
  dg = alloc_out(need_grad_out, c.N, n_out, x);
  dx = alloc_out(need_x, c.N, c.M, x);
  dw = alloc_out(need_weights, c.Z, c.Wn, x);
  trivial = c.N == 0 || c.C == 0 || (!c.vx.defined() && !c.vw.defined());
  if (trivial) {
    dg.zero_();
    dx.zero_();
    dw.zero_();
  }
  return c;
}

// data_ptr<T>() of t, or nullptr when `use` is false or t is undefined (an output not requested, an absent
// tangent).
template <typename T>
T* ptr_or_null(const at::Tensor& t, bool use = true) {
  return (use && t.defined()) ? t.data_ptr<T>() : nullptr;
}

}  // namespace sc_glue
}  // namespace nnip_scale
