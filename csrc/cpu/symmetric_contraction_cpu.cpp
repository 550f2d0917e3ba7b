// CPU kernels of nnip_scale::symmetric_contraction, its backward and its double backward (OpenMP,
// see symmetric_contraction_kernels.h): argument checks naming the op and the argument, dtype
// dispatch (float32, float64), and the call into the raw kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/tensor_checks.h"
#include "scatter_kernels.h"
#include "symmetric_contraction_kernels.h"

namespace nnip_scale {
namespace {

constexpr const char* kFwd = "nnip_scale::symmetric_contraction";
constexpr const char* kBwd = "nnip_scale::symmetric_contraction_backward";
constexpr const char* kDbl = "nnip_scale::symmetric_contraction_double_backward";

using checks::check_float;  // csrc/common/tensor_checks.h
using checks::check_long;

// Contiguous tables + their consistency check; keeps the contiguous copies alive.
struct Tables {
  at::Tensor mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight;
  cpu::SCTables t;
};

Tables make_tables(const char* op, const at::Tensor& x, const at::Tensor& mono_parent,
                   const at::Tensor& mono_var, const at::Tensor& row_ptr,
                   const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
                   const at::Tensor& row_out, const at::Tensor& row_weight, int64_t n_out,
                   int64_t Wn) {
  check_long(mono_parent, op, "mono_parent", x);
  check_long(mono_var, op, "mono_var", x);
  check_long(row_ptr, op, "row_ptr", x);
  check_long(entry_mono, op, "entry_mono", x);
  check_float(entry_coeff, op, "entry_coeff", 1, x);
  check_long(row_out, op, "row_out", x);
  check_long(row_weight, op, "row_weight", x);
  TORCH_CHECK(n_out >= 0, op, ": n_out must be >= 0, got ", n_out);
  const int64_t Q = mono_parent.size(0), R = row_out.size(0), nnz = entry_mono.size(0);
  TORCH_CHECK(mono_var.size(0) == Q, op, ": mono_var must have len(mono_parent) = ", Q,
              " entries, got ", mono_var.size(0));
  TORCH_CHECK(row_ptr.size(0) == R + 1, op, ": row_ptr must have len(row_out) + 1 = ", R + 1,
              " entries, got ", row_ptr.size(0));
  TORCH_CHECK(row_weight.size(0) == R, op, ": row_weight must have len(row_out) = ", R,
              " entries, got ", row_weight.size(0));
  TORCH_CHECK(entry_coeff.size(0) == nnz, op, ": entry_coeff must have len(entry_mono) = ", nnz,
              " entries, got ", entry_coeff.size(0));
  Tables tb{mono_parent.contiguous(), mono_var.contiguous(), row_ptr.contiguous(),
            entry_mono.contiguous(),  entry_coeff.contiguous(), row_out.contiguous(),
            row_weight.contiguous(),  {}};
  tb.t.Q = Q;
  tb.t.R = R;
  tb.t.nnz = nnz;
  tb.t.K = n_out;
  tb.t.mono_parent = tb.mono_parent.data_ptr<int64_t>();
  tb.t.mono_var = tb.mono_var.data_ptr<int64_t>();
  tb.t.row_ptr = tb.row_ptr.data_ptr<int64_t>();
  tb.t.entry_mono = tb.entry_mono.data_ptr<int64_t>();
  tb.t.row_out = tb.row_out.data_ptr<int64_t>();
  tb.t.row_weight = tb.row_weight.data_ptr<int64_t>();
  const char* bad = cpu::check_sc_tables(tb.t, x.size(1), Wn);
  TORCH_CHECK(bad == nullptr, op, ": inconsistent product-basis tables: ", bad ? bad : "");
  return tb;
}

// x [N, M, C], weights [Z, Wn, C], index int64 [N] with values in [0, Z).
void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weights,
                  const at::Tensor& index, int nt) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [N, M, C], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  check_float(weights, op, "weights", 3, x);
  TORCH_CHECK(weights.size(2) == x.size(2), op, ": weights must have C = x.size(2) = ", x.size(2),
              " channels, got ", weights.size(2));
  check_long(index, op, "index", x);
  TORCH_CHECK(index.size(0) == x.size(0), op, ": index must have N = x.size(0) = ", x.size(0),
              " entries, got ", index.size(0));
  const auto idx = index.contiguous();
  const int64_t bad = cpu::count_invalid_index(idx.data_ptr<int64_t>(), idx.size(0), weights.size(0), nt);
  TORCH_CHECK(bad == 0, op, ": index has ", bad, " entries outside [0, weights.size(0)=",
              weights.size(0), ")");
}

at::Tensor symmetric_contraction_cpu(const at::Tensor& x, const at::Tensor& weights,
                                     const at::Tensor& index, const at::Tensor& mono_parent,
                                     const at::Tensor& mono_var, const at::Tensor& row_ptr,
                                     const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
                                     const at::Tensor& row_out, const at::Tensor& row_weight,
                                     int64_t n_out) {
  const int nt = at::get_num_threads();
  check_inputs(kFwd, x, weights, index, nt);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Wn = weights.size(1);
  Tables tb = make_tables(kFwd, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                          row_weight, n_out, Wn);
  auto out = at::empty({N, n_out, C}, x.options());
  if (out.numel() == 0) return out;
  auto xs = x.contiguous(), w = weights.contiguous(), idx = index.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_symmetric_contraction_cpu", [&] {
    cpu::sc_forward<scalar_t>(xs.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                              tb.t, tb.entry_coeff.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
                              M, Wn, C, nt);
  });
  return out;
}

void check_grad_out(const char* op, const at::Tensor& g, const at::Tensor& x, int64_t n_out) {
  check_float(g, op, "grad_out", 3, x);
  TORCH_CHECK(g.size(0) == x.size(0) && g.size(1) == n_out && g.size(2) == x.size(2), op,
              ": grad_out must be [N=", x.size(0), ", n_out=", n_out, ", C=", x.size(2), "], got ",
              g.sizes());
}

std::tuple<at::Tensor, at::Tensor> symmetric_contraction_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights,
    const at::Tensor& index, const at::Tensor& mono_parent, const at::Tensor& mono_var,
    const at::Tensor& row_ptr, const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
    const at::Tensor& row_out, const at::Tensor& row_weight, int64_t n_out, bool need_x,
    bool need_weights) {
  const int nt = at::get_num_threads();
  check_inputs(kBwd, x, weights, index, nt);
  check_grad_out(kBwd, grad_out, x, n_out);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Z = weights.size(0), Wn = weights.size(1);
  Tables tb = make_tables(kBwd, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                          row_weight, n_out, Wn);
  // gradients that are not requested are returned as empty [0] tensors (distinct, never aliased)
  at::Tensor gx = at::empty({need_x ? N : 0, M, C}, x.options());
  at::Tensor gw = at::empty({need_weights ? Z : 0, Wn, C}, x.options());
  if (N == 0 || C == 0 || (!need_x && !need_weights)) {
    gx.zero_();
    gw.zero_();
    return {gx, gw};
  }
  auto g = grad_out.contiguous(), xs = x.contiguous(), w = weights.contiguous(), idx = index.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_symmetric_contraction_backward_cpu", [&] {
    cpu::sc_backward<scalar_t>(g.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                               idx.data_ptr<int64_t>(), tb.t, tb.entry_coeff.data_ptr<scalar_t>(),
                               need_x ? gx.data_ptr<scalar_t>() : nullptr,
                               need_weights ? gw.data_ptr<scalar_t>() : nullptr, N, M, Z, Wn, C, nt);
  });
  return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> symmetric_contraction_double_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights,
    const at::Tensor& index, const std::optional<at::Tensor>& tangent_x,
    const std::optional<at::Tensor>& tangent_weights, const at::Tensor& mono_parent,
    const at::Tensor& mono_var, const at::Tensor& row_ptr, const at::Tensor& entry_mono,
    const at::Tensor& entry_coeff, const at::Tensor& row_out, const at::Tensor& row_weight,
    int64_t n_out, bool need_grad_out, bool need_x, bool need_weights) {
  const int nt = at::get_num_threads();
  check_inputs(kDbl, x, weights, index, nt);
  check_grad_out(kDbl, grad_out, x, n_out);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Z = weights.size(0), Wn = weights.size(1);
  Tables tb = make_tables(kDbl, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                          row_weight, n_out, Wn);
  at::Tensor vx, vw;
  if (tangent_x.has_value()) {
    check_float(*tangent_x, kDbl, "tangent_x", 3, x);
    TORCH_CHECK(tangent_x->sizes() == x.sizes(), kDbl, ": tangent_x must have the shape of x ",
                x.sizes(), ", got ", tangent_x->sizes());
    vx = tangent_x->contiguous();
  }
  if (tangent_weights.has_value()) {
    check_float(*tangent_weights, kDbl, "tangent_weights", 3, x);
    TORCH_CHECK(tangent_weights->sizes() == weights.sizes(), kDbl,
                ": tangent_weights must have the shape of weights ", weights.sizes(), ", got ",
                tangent_weights->sizes());
    vw = tangent_weights->contiguous();
  }
  at::Tensor dg = at::empty({need_grad_out ? N : 0, n_out, C}, x.options());
  at::Tensor dx = at::empty({need_x ? N : 0, M, C}, x.options());
  at::Tensor dw = at::empty({need_weights ? Z : 0, Wn, C}, x.options());
  if (N == 0 || C == 0 || (!vx.defined() && !vw.defined())) {
    dg.zero_();
    dx.zero_();
    dw.zero_();
    return {dg, dx, dw};
  }
  auto g = grad_out.contiguous(), xs = x.contiguous(), w = weights.contiguous(), idx = index.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_symmetric_contraction_double_backward_cpu", [&] {
    cpu::sc_double_backward<scalar_t>(
        g.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
        vx.defined() ? vx.data_ptr<scalar_t>() : nullptr, vw.defined() ? vw.data_ptr<scalar_t>() : nullptr,
        tb.t, tb.entry_coeff.data_ptr<scalar_t>(), need_grad_out ? dg.data_ptr<scalar_t>() : nullptr,
        need_x ? dx.data_ptr<scalar_t>() : nullptr, need_weights ? dw.data_ptr<scalar_t>() : nullptr, N, M,
        Z, Wn, C, nt);
  });
  return {dg, dx, dw};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("symmetric_contraction", &symmetric_contraction_cpu);
  m.impl("symmetric_contraction_backward", &symmetric_contraction_backward_cpu);
  m.impl("symmetric_contraction_double_backward", &symmetric_contraction_double_backward_cpu);
}

}  // namespace nnip_scale
