// CPU kernels of nnip_scale::symmetric_contraction, its backward and its double backward (OpenMP, see
// symmetric_contraction_kernels.h): checks (symmetric_contraction/glue.h, plus the index range and the
// table values, which the CPU can afford) -> dtype dispatch -> kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/dispatch.h"
#include "symmetric_contraction/cpu/symmetric_contraction_kernels.h"
#include "symmetric_contraction/glue.h"

namespace nnip_scale {
namespace {

using namespace sc_glue;

// On CPU the index values and the table values are checked too.
Validation on_cpu(int nt) { return Validation{true, nt}; }

at::Tensor symmetric_contraction_cpu(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
                                     const at::Tensor& mono_parent, const at::Tensor& mono_var,
                                     const at::Tensor& row_ptr, const at::Tensor& entry_mono,
                                     const at::Tensor& entry_coeff, const at::Tensor& row_out,
                                     const at::Tensor& row_weight, int64_t n_out) {
  const int nt = at::get_num_threads();
  const Call c = prepare(kFwd, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                         row_weight, n_out, on_cpu(nt));
  auto out = at::empty({c.N, n_out, c.C}, x.options());
  if (out.numel() == 0) return out;
  dispatch_float(kFwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::sc_forward<T>(c.x.data_ptr<T>(), c.w.data_ptr<T>(), c.index.data_ptr<int64_t>(), c.tb.t,
                       c.tb.entry_coeff.data_ptr<T>(), out.data_ptr<T>(), c.N, c.M, c.Wn, c.C, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> symmetric_contraction_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_x, bool need_weights) {
  const int nt = at::get_num_threads();
  at::Tensor gx, gw;
  bool trivial = false;
  const Call c = prepare_backward(grad_out, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono,
                                  entry_coeff, row_out, row_weight, n_out, need_x, need_weights, on_cpu(nt), gx, gw,
                                  trivial);
  if (trivial) return {gx, gw};
  dispatch_float(kBwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::sc_backward<T>(c.g.data_ptr<T>(), c.x.data_ptr<T>(), c.w.data_ptr<T>(), c.index.data_ptr<int64_t>(),
                        c.tb.t, c.tb.entry_coeff.data_ptr<T>(), ptr_or_null<T>(gx, need_x),
                        ptr_or_null<T>(gw, need_weights), c.N, c.M, c.Z, c.Wn, c.C, nt);
  });
  return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> symmetric_contraction_double_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const std::optional<at::Tensor>& tangent_x, const std::optional<at::Tensor>& tangent_weights,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_grad_out, bool need_x, bool need_weights) {
  const int nt = at::get_num_threads();
  at::Tensor dg, dx, dw;
  bool trivial = false;
  const Call c = prepare_double_backward(grad_out, x, weights, index, tangent_x, tangent_weights, mono_parent,
                                         mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out,
                                         need_grad_out, need_x, need_weights, on_cpu(nt), dg, dx, dw, trivial);
  if (trivial) return {dg, dx, dw};
  dispatch_float(kDbl, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::sc_double_backward<T>(c.g.data_ptr<T>(), c.x.data_ptr<T>(), c.w.data_ptr<T>(), c.index.data_ptr<int64_t>(),
                               ptr_or_null<T>(c.vx), ptr_or_null<T>(c.vw), c.tb.t, c.tb.entry_coeff.data_ptr<T>(),
                               ptr_or_null<T>(dg, need_grad_out), ptr_or_null<T>(dx, need_x),
                               ptr_or_null<T>(dw, need_weights), c.N, c.M, c.Z, c.Wn, c.C, nt);
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
