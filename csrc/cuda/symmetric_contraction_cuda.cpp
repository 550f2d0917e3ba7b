// Torch glue of the CUDA symmetric-contraction kernels (compiled only in the CUDA build of setup.py):
// argument checks naming the op and the argument, the atoms grouped by element (a stable argsort and
// a searchsorted, no host sync), the weight-gradient workspace, dtype dispatch (float32, float64).
// As the CUDA scatter, it does not range-check index values or validate the tables (that would need
// a device-to-host copy): see csrc/cuda/symmetric_contraction_kernels.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/tensor_checks.h"
#include "symmetric_contraction_kernels.h"

namespace nnip_scale {
namespace {

constexpr const char* kFwd = "nnip_scale::symmetric_contraction";
constexpr const char* kBwd = "nnip_scale::symmetric_contraction_backward";
constexpr const char* kDbl = "nnip_scale::symmetric_contraction_double_backward";

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err),
              " (cudaErrorInvalidValue: x has too many rows for the shared-memory layout)");
}

using checks::check_float;  // csrc/common/tensor_checks.h
using checks::check_long;

struct Tables {
  at::Tensor mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight;
  cuda::SCTablesDevice t;
};

Tables make_tables(const char* op, const at::Tensor& x, const at::Tensor& mono_parent, const at::Tensor& mono_var,
                   const at::Tensor& row_ptr, const at::Tensor& entry_mono, const at::Tensor& entry_coeff,
                   const at::Tensor& row_out, const at::Tensor& row_weight, int64_t n_out) {
  check_long(mono_parent, op, "mono_parent", x);
  check_long(mono_var, op, "mono_var", x);
  check_long(row_ptr, op, "row_ptr", x);
  check_long(entry_mono, op, "entry_mono", x);
  check_float(entry_coeff, op, "entry_coeff", 1, x);
  check_long(row_out, op, "row_out", x);
  check_long(row_weight, op, "row_weight", x);
  TORCH_CHECK(n_out >= 0, op, ": n_out must be >= 0, got ", n_out);
  const int64_t Q = mono_parent.size(0), R = row_out.size(0), nnz = entry_mono.size(0);
  TORCH_CHECK(mono_var.size(0) == Q, op, ": mono_var must have len(mono_parent) = ", Q, " entries, got ",
              mono_var.size(0));
  TORCH_CHECK(row_ptr.size(0) == R + 1, op, ": row_ptr must have len(row_out) + 1 = ", R + 1, " entries, got ",
              row_ptr.size(0));
  TORCH_CHECK(row_weight.size(0) == R, op, ": row_weight must have len(row_out) = ", R, " entries, got ",
              row_weight.size(0));
  TORCH_CHECK(entry_coeff.size(0) == nnz, op, ": entry_coeff must have len(entry_mono) = ", nnz, " entries, got ",
              entry_coeff.size(0));
  Tables tb{mono_parent.contiguous(), mono_var.contiguous(), row_ptr.contiguous(), entry_mono.contiguous(),
            entry_coeff.contiguous(),  row_out.contiguous(),  row_weight.contiguous(), {}};
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
  return tb;
}

void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [N, M, C], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  check_float(weights, op, "weights", 3, x);
  TORCH_CHECK(weights.size(2) == x.size(2), op, ": weights must have C = x.size(2) = ", x.size(2),
              " channels, got ", weights.size(2));
  check_long(index, op, "index", x);
  TORCH_CHECK(index.size(0) == x.size(0), op, ": index must have N = x.size(0) = ", x.size(0), " entries, got ",
              index.size(0));
}

void check_grad_out(const char* op, const at::Tensor& g, const at::Tensor& x, int64_t n_out) {
  check_float(g, op, "grad_out", 3, x);
  TORCH_CHECK(g.size(0) == x.size(0) && g.size(1) == n_out && g.size(2) == x.size(2), op, ": grad_out must be [N=",
              x.size(0), ", n_out=", n_out, ", C=", x.size(2), "], got ", g.sizes());
}

// The atoms grouped by element: order [N] (stable) and elem_ptr [Z + 1], without a host sync.
std::tuple<at::Tensor, at::Tensor> group_by_element(const at::Tensor& index, int64_t Z) {
  auto order = at::argsort(index, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto sorted = index.index_select(0, order);
  auto bounds = at::arange(Z + 1, index.options());
  auto elem_ptr = at::searchsorted(sorted, bounds);  // first position with sorted >= z
  return {order, elem_ptr};
}

at::Tensor symmetric_contraction_cuda(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
                                      const at::Tensor& mono_parent, const at::Tensor& mono_var,
                                      const at::Tensor& row_ptr, const at::Tensor& entry_mono,
                                      const at::Tensor& entry_coeff, const at::Tensor& row_out,
                                      const at::Tensor& row_weight, int64_t n_out) {
  check_inputs(kFwd, x, weights, index);
  c10::cuda::CUDAGuard guard(x.device());
  Tables tb = make_tables(kFwd, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Z = weights.size(0), Wn = weights.size(1);
  auto out = at::empty({N, n_out, C}, x.options());
  if (out.numel() == 0) return out;
  auto xs = x.contiguous(), w = weights.contiguous(), idx = index.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (x.scalar_type() == at::kFloat) {
    check_launch(cuda::sc_forward(xs.data_ptr<float>(), w.data_ptr<float>(), idx.data_ptr<int64_t>(), tb.t,
                                  tb.entry_coeff.data_ptr<float>(), out.data_ptr<float>(), N, M, Z, Wn, C, stream),
                 kFwd);
  } else {
    check_launch(cuda::sc_forward(xs.data_ptr<double>(), w.data_ptr<double>(), idx.data_ptr<int64_t>(), tb.t,
                                  tb.entry_coeff.data_ptr<double>(), out.data_ptr<double>(), N, M, Z, Wn, C, stream),
                 kFwd);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> symmetric_contraction_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_x, bool need_weights) {
  check_inputs(kBwd, x, weights, index);
  check_grad_out(kBwd, grad_out, x, n_out);
  c10::cuda::CUDAGuard guard(x.device());
  Tables tb = make_tables(kBwd, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Z = weights.size(0), Wn = weights.size(1);
  at::Tensor gx = at::empty({need_x ? N : 0, M, C}, x.options());
  at::Tensor gw = at::empty({need_weights ? Z : 0, Wn, C}, x.options());
  if (N == 0 || C == 0 || (!need_x && !need_weights)) {
    gx.zero_();
    gw.zero_();
    return {gx, gw};
  }
  auto g = grad_out.contiguous(), xs = x.contiguous(), w = weights.contiguous(), idx = index.contiguous();
  at::Tensor order, elem_ptr, workspace;
  const int64_t S = cuda::sc_weight_slices(N, Z, Wn, C);
  if (need_weights) {
    std::tie(order, elem_ptr) = group_by_element(idx, Z);
    workspace = at::empty({cuda::sc_workspace_elems(Z, Wn, C, S)}, x.options());
  }
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return cuda::sc_backward(g.data_ptr<T>(), xs.data_ptr<T>(), w.data_ptr<T>(), idx.data_ptr<int64_t>(),
                             need_weights ? order.data_ptr<int64_t>() : nullptr,
                             need_weights ? elem_ptr.data_ptr<int64_t>() : nullptr, tb.t,
                             tb.entry_coeff.data_ptr<T>(), need_x ? gx.data_ptr<T>() : nullptr,
                             need_weights ? gw.data_ptr<T>() : nullptr,
                             need_weights ? workspace.data_ptr<T>() : nullptr, S, N, M, Z, Wn, C, stream);
  };
  check_launch(x.scalar_type() == at::kFloat ? run(float{}) : run(double{}), kBwd);
  return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> symmetric_contraction_double_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const std::optional<at::Tensor>& tangent_x, const std::optional<at::Tensor>& tangent_weights,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_grad_out, bool need_x, bool need_weights) {
  check_inputs(kDbl, x, weights, index);
  check_grad_out(kDbl, grad_out, x, n_out);
  c10::cuda::CUDAGuard guard(x.device());
  Tables tb = make_tables(kDbl, x, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out);
  const int64_t N = x.size(0), M = x.size(1), C = x.size(2), Z = weights.size(0), Wn = weights.size(1);
  at::Tensor vx, vw;
  if (tangent_x.has_value()) {
    check_float(*tangent_x, kDbl, "tangent_x", 3, x);
    TORCH_CHECK(tangent_x->sizes() == x.sizes(), kDbl, ": tangent_x must have the shape of x ", x.sizes(), ", got ",
                tangent_x->sizes());
    vx = tangent_x->contiguous();
  }
  if (tangent_weights.has_value()) {
    check_float(*tangent_weights, kDbl, "tangent_weights", 3, x);
    TORCH_CHECK(tangent_weights->sizes() == weights.sizes(), kDbl, ": tangent_weights must have the shape of weights ",
                weights.sizes(), ", got ", tangent_weights->sizes());
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
  at::Tensor order, elem_ptr, workspace;
  const int64_t S = cuda::sc_weight_slices(N, Z, Wn, C);
  const bool weights_kernel = need_weights && vx.defined();
  if (weights_kernel) {
    std::tie(order, elem_ptr) = group_by_element(idx, Z);
    workspace = at::empty({cuda::sc_workspace_elems(Z, Wn, C, S)}, x.options());
  }
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return cuda::sc_double_backward(
        g.data_ptr<T>(), xs.data_ptr<T>(), w.data_ptr<T>(), idx.data_ptr<int64_t>(),
        weights_kernel ? order.data_ptr<int64_t>() : nullptr, weights_kernel ? elem_ptr.data_ptr<int64_t>() : nullptr,
        vx.defined() ? vx.data_ptr<T>() : nullptr, vw.defined() ? vw.data_ptr<T>() : nullptr, tb.t,
        tb.entry_coeff.data_ptr<T>(), need_grad_out ? dg.data_ptr<T>() : nullptr, need_x ? dx.data_ptr<T>() : nullptr,
        need_weights ? dw.data_ptr<T>() : nullptr, weights_kernel ? workspace.data_ptr<T>() : nullptr, S, N, M, Z, Wn,
        C, stream);
  };
  check_launch(x.scalar_type() == at::kFloat ? run(float{}) : run(double{}), kDbl);
  return {dg, dx, dw};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("symmetric_contraction", &symmetric_contraction_cuda);
  m.impl("symmetric_contraction_backward", &symmetric_contraction_backward_cuda);
  m.impl("symmetric_contraction_double_backward", &symmetric_contraction_double_backward_cuda);
}

}  // namespace nnip_scale
