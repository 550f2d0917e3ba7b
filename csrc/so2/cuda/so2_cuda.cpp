// Torch glue of the CUDA eSEN rotation kernels (compiled only in the CUDA build of setup.py): checks
// (so2/glue.h, the same as on CPU, without the value checks) -> the edges grouped by atom where a
// scatter needs them (a stable device sort and a searchsorted, no host sync) -> dtype dispatch ->
// launch. Deterministic, no float atomics: every output element is summed by one thread in a fixed
// order (so2/cuda/so2_kernels.h).
//
// As the other CUDA ops it does not range-check the indices or validate the block_rows values (that
// would need a device-to-host copy); the kernels guard against both instead: an endpoint outside
// [0, A) adds nothing, an edge whose receiver lies outside [0, dim_size) is in no segment, and a
// block_rows table the CPU would reject gives NaN where it is read. The CPU path rejects all of them
// with an error.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "common/cuda_glue.h"
#include "common/dispatch.h"
#include "so2/cuda/so2_kernels.h"
#include "so2/glue.h"

namespace nnip_scale {
namespace {

using namespace so2_glue;
using checks::check_launch;

// On CUDA only the tensors are checked, not the index or table values (a host sync).
constexpr bool kValidate = false;

cuda::SO2RowsDevice device_rows(const Rows& rows) {
  cuda::SO2RowsDevice b;
  b.R = rows.b.R;
  b.rows = rows.b.rows;  // block_rows is on the device of x (checked)
  return b;
}

// ------------------------------------------------------------------------------------- rotate in
at::Tensor so2_rotate_in_cuda(const at::Tensor& x, const at::Tensor& wigner, const at::Tensor& src,
                              const at::Tensor& dst, const at::Tensor& block_rows) {
  const Rows rows = check_rotate_in(kIn, x, wigner, src, dst, block_rows, kValidate);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  auto out = at::empty({E, rows.b.R, 2 * C}, x.options());
  if (out.numel() == 0) return out;
  auto xs = x.contiguous(), w = wigner.contiguous(), s = src.contiguous(), d = dst.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kIn, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::so2_rotate_gather(xs.data_ptr<T>(), w.data_ptr<T>(), s.data_ptr<int64_t>(),
                                         d.data_ptr<int64_t>(), 2, device_rows(rows), out.data_ptr<T>(), E, A, K, C,
                                         NB, stream),
                 kIn);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_in_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                               const at::Tensor& wigner, const at::Tensor& src,
                                                               const at::Tensor& dst, const at::Tensor& block_rows,
                                                               bool need_x, bool need_wigner) {
  const Rows rows = check_rotate_in(kInBwd, x, wigner, src, dst, block_rows, kValidate);
  check_rotate_in_grad(grad_out, x, wigner, rows);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  at::Tensor gx = at::empty({need_x ? A : 0, K, C}, x.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, x.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), xs = x.contiguous();
  auto s = src.contiguous(), d = dst.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (need_x && gx.numel() > 0) {
    // grad_x[a] sums the sender half of a's outgoing edges, then the receiver half of its incoming ones
    at::Tensor ptr_s, order_s, ptr_d, order_d;
    std::tie(ptr_s, order_s) = group_by_key(s, A);
    std::tie(ptr_d, order_d) = group_by_key(d, A);
    dispatch_float(kInBwd, x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check_launch(cuda::so2_rotate_scatter(g.data_ptr<T>(), w.data_ptr<T>(), ptr_s.data_ptr<int64_t>(),
                                            order_s.data_ptr<int64_t>(), ptr_d.data_ptr<int64_t>(),
                                            order_d.data_ptr<int64_t>(), 2, device_rows(rows), gx.data_ptr<T>(), A,
                                            K, C, NB, stream),
                   kInBwd);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    dispatch_float(kInBwd, x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check_launch(cuda::so2_wigner_grad(g.data_ptr<T>(), xs.data_ptr<T>(), s.data_ptr<int64_t>(),
                                         d.data_ptr<int64_t>(), 2, device_rows(rows), gw.data_ptr<T>(), E, A, K, C,
                                         NB, stream),
                   kInBwd);
    });
  }
  return {gx, gw};
}

// ----------------------------------------------------------------------------- rotate out + scatter
at::Tensor so2_rotate_out_scatter_cuda(const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
                                       int64_t dim_size, const at::Tensor& block_rows, int64_t n_components) {
  const Rows rows = check_rotate_out_forward(y, wigner, index, dim_size, block_rows, n_components, kValidate);
  c10::cuda::CUDAGuard guard(y.device());
  const int64_t C = y.size(2), NB = wigner.size(1), K = n_components;
  auto out = at::empty({dim_size, K, C}, y.options());
  if (out.numel() == 0) return out;
  at::Tensor ptr, order;
  std::tie(ptr, order) = group_by_key(index.contiguous(), dim_size);
  auto ys = y.contiguous(), w = wigner.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kOut, y.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    // S = 1: the second half's CSR is never read
    check_launch(cuda::so2_rotate_scatter(ys.data_ptr<T>(), w.data_ptr<T>(), ptr.data_ptr<int64_t>(),
                                          order.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
                                          order.data_ptr<int64_t>(), 1, device_rows(rows), out.data_ptr<T>(),
                                          dim_size, K, C, NB, stream),
                 kOut);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_out_scatter_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
    const at::Tensor& block_rows, bool need_y, bool need_wigner) {
  const Rows rows = check_rotate_out_backward(grad_out, y, wigner, index, block_rows, kValidate);
  c10::cuda::CUDAGuard guard(y.device());
  const int64_t E = y.size(0), C = y.size(2), NB = wigner.size(1), N = grad_out.size(0), K = grad_out.size(1);
  at::Tensor gy = at::empty({need_y ? E : 0, rows.b.R, C}, y.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, y.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), ys = y.contiguous(), idx = index.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  // grad_y is the gather of grad_out (S = 1), grad_wigner the per-edge dot products with grad_out's rows;
  // an edge whose index lies outside [0, N) gets zero rows (it added nothing in the forward)
  if (need_y && gy.numel() > 0) {
    dispatch_float(kOutBwd, y.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check_launch(cuda::so2_rotate_gather(g.data_ptr<T>(), w.data_ptr<T>(), idx.data_ptr<int64_t>(),
                                           idx.data_ptr<int64_t>(), 1, device_rows(rows), gy.data_ptr<T>(), E, N, K,
                                           C, NB, stream),
                   kOutBwd);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    dispatch_float(kOutBwd, y.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check_launch(cuda::so2_wigner_grad(ys.data_ptr<T>(), g.data_ptr<T>(), idx.data_ptr<int64_t>(),
                                         idx.data_ptr<int64_t>(), 1, device_rows(rows), gw.data_ptr<T>(), E, N, K, C,
                                         NB, stream),
                   kOutBwd);
    });
  }
  return {gy, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("so2_rotate_in", &so2_rotate_in_cuda);
  m.impl("so2_rotate_in_backward", &so2_rotate_in_backward_cuda);
  m.impl("so2_rotate_out_scatter", &so2_rotate_out_scatter_cuda);
  m.impl("so2_rotate_out_scatter_backward", &so2_rotate_out_scatter_backward_cuda);
}

}  // namespace nnip_scale
