// Torch glue of the CUDA symmetric-contraction kernels (compiled only in the CUDA build of setup.py):
// checks (symmetric_contraction/glue.h) -> the atoms grouped by element (a stable device sort and a
// searchsorted, no host sync) and the weight-gradient workspace -> dtype dispatch -> launch.
// As the CUDA scatter, it does not range-check index values or validate the tables (that would need
// a device-to-host copy): see symmetric_contraction/cuda/symmetric_contraction_kernels.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/cuda_glue.h"
#include "common/dispatch.h"
#include "symmetric_contraction/cuda/symmetric_contraction_kernels.h"
#include "symmetric_contraction/glue.h"

namespace nnip_scale {
namespace {

using namespace sc_glue;

constexpr const char* kLaunchHint = " (cudaErrorInvalidValue: x has too many rows for the shared-memory layout)";

// For the weight gradients: the atoms grouped by element, order [N] (stable) and elem_ptr [Z + 1], without a
// host sync, and the workspace of the slice partials.
struct ByElement {
  at::Tensor order, elem_ptr, workspace;
  int64_t slices = 0;
};

ByElement group_by_element(bool needed, const at::Tensor& index, const at::Tensor& x, int64_t Z, int64_t Wn) {
  ByElement b;
  b.slices = cuda::sc_weight_slices(x.size(0), Z, Wn, x.size(2));
  if (!needed) return b;
  std::tie(b.elem_ptr, b.order) = group_by_key(index, Z);
  b.workspace = at::empty({cuda::sc_workspace_elems(Z, Wn, x.size(2), b.slices)}, x.options());
  return b;
}

// On CUDA only the tensors are checked, not the index or table values (a host sync).
constexpr Validation kOnCuda{false, 1};

at::Tensor symmetric_contraction_cuda(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
                                      const at::Tensor& mono_parent, const at::Tensor& mono_var,
                                      const at::Tensor& row_ptr, const at::Tensor& entry_mono,
                                      const at::Tensor& entry_coeff, const at::Tensor& row_out,
                                      const at::Tensor& row_weight, int64_t n_out) {
  c10::cuda::CUDAGuard guard(x.device());
  const Call c = prepare(kFwd, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                         row_weight, n_out, kOnCuda);
  auto out = at::empty({c.N, n_out, c.C}, x.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kFwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    checks::check_launch(cuda::sc_forward<T>(c.x.data_ptr<T>(), c.w.data_ptr<T>(), c.index.data_ptr<int64_t>(),
                                             c.tb.t, c.tb.entry_coeff.data_ptr<T>(), out.data_ptr<T>(), c.N, c.M,
                                             c.Z, c.Wn, c.C, stream),
                         kFwd, kLaunchHint);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> symmetric_contraction_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_x, bool need_weights) {
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor gx, gw;
  bool trivial = false;
  const Call c = prepare_backward(grad_out, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono,
                                  entry_coeff, row_out, row_weight, n_out, need_x, need_weights, kOnCuda, gx, gw,
                                  trivial);
  if (trivial) return {gx, gw};
  const ByElement be = group_by_element(need_weights, c.index, x, c.Z, c.Wn);
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kBwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    checks::check_launch(
        cuda::sc_backward<T>(c.g.data_ptr<T>(), c.x.data_ptr<T>(), c.w.data_ptr<T>(), c.index.data_ptr<int64_t>(),
                             ptr_or_null<int64_t>(be.order), ptr_or_null<int64_t>(be.elem_ptr), c.tb.t,
                             c.tb.entry_coeff.data_ptr<T>(), ptr_or_null<T>(gx, need_x),
                             ptr_or_null<T>(gw, need_weights), ptr_or_null<T>(be.workspace), be.slices, c.N, c.M, c.Z,
                             c.Wn, c.C, stream),
        kBwd, kLaunchHint);
  });
  return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> symmetric_contraction_double_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index,
    const std::optional<at::Tensor>& tangent_x, const std::optional<at::Tensor>& tangent_weights,
    const at::Tensor& mono_parent, const at::Tensor& mono_var, const at::Tensor& row_ptr,
    const at::Tensor& entry_mono, const at::Tensor& entry_coeff, const at::Tensor& row_out,
    const at::Tensor& row_weight, int64_t n_out, bool need_grad_out, bool need_x, bool need_weights) {
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dg, dx, dw;
  bool trivial = false;
  const Call c = prepare_double_backward(grad_out, x, weights, index, tangent_x, tangent_weights, mono_parent,
                                         mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight, n_out,
                                         need_grad_out, need_x, need_weights, kOnCuda, dg, dx, dw, trivial);
  if (trivial) return {dg, dx, dw};
  const ByElement be = group_by_element(need_weights && c.vx.defined(), c.index, x, c.Z, c.Wn);
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kDbl, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    checks::check_launch(
        cuda::sc_double_backward<T>(c.g.data_ptr<T>(), c.x.data_ptr<T>(), c.w.data_ptr<T>(),
                                    c.index.data_ptr<int64_t>(), ptr_or_null<int64_t>(be.order),
                                    ptr_or_null<int64_t>(be.elem_ptr), ptr_or_null<T>(c.vx), ptr_or_null<T>(c.vw),
                                    c.tb.t, c.tb.entry_coeff.data_ptr<T>(), ptr_or_null<T>(dg, need_grad_out),
                                    ptr_or_null<T>(dx, need_x), ptr_or_null<T>(dw, need_weights),
                                    ptr_or_null<T>(be.workspace), be.slices, c.N, c.M, c.Z, c.Wn, c.C, stream),
        kDbl, kLaunchHint);
  });
  return {dg, dx, dw};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("symmetric_contraction", &symmetric_contraction_cuda);
  m.impl("symmetric_contraction_backward", &symmetric_contraction_backward_cuda);
  m.impl("symmetric_contraction_double_backward", &symmetric_contraction_double_backward_cuda);
}

}  // namespace nnip_scale
