// Torch glue of the CUDA scatter / gather kernels (compiled only in the CUDA build of setup.py):
// checks (scatter/glue.h) -> dtype dispatch -> launch. Out-of-range indices are not rejected (that
// would need a host sync): the kernels skip them (see scatter_kernels.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_glue.h"
#include "common/dispatch.h"
#include "scatter/cuda/scatter_kernels.h"
#include "scatter/glue.h"

namespace nnip_scale {
namespace {

using namespace scatter_glue;
using checks::check_launch;

at::Tensor scatter_sum_cuda(const at::Tensor& src, const at::Tensor& index, int64_t dim_size) {
  check_scatter(src, index, dim_size);
  c10::cuda::CUDAGuard guard(src.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto s = src.contiguous();
  auto idx = index.contiguous();
  const int64_t E = s.size(0), F = row_width(s);
  const auto dtype = s.scalar_type();
  if (dtype == at::kBFloat16 || dtype == at::kHalf) {
    auto acc = at::zeros(with_rows(s, dim_size), s.options().dtype(at::kFloat));  // accumulate in fp32
    const auto launch = dtype == at::kBFloat16 ? cuda::scatter_sum_bf16_acc_f32 : cuda::scatter_sum_f16_acc_f32;
    check_launch(launch(s.data_ptr(), idx.data_ptr<int64_t>(), acc.data_ptr<float>(), E, F, dim_size, stream),
                 kScatter);
    return acc.to(dtype);
  }
  auto out = at::zeros(with_rows(s, dim_size), s.options());
  dispatch_float(kScatter, dtype, [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::scatter_sum<T>(s.data_ptr<T>(), idx.data_ptr<int64_t>(), out.data_ptr<T>(), E, F,
                                      dim_size, stream),
                 kScatter);
  });
  return out;
}

at::Tensor gather_rows_cuda(const at::Tensor& x, const at::Tensor& index) {
  check_index(x, index, kGather, "x");
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto xs = x.contiguous();
  auto idx = index.contiguous();
  const int64_t E = idx.size(0);
  auto out = at::empty(with_rows(xs, E), xs.options());
  const int64_t row_bytes = row_width(xs) * static_cast<int64_t>(xs.element_size());
  check_launch(cuda::gather_rows_bytes(xs.data_ptr(), idx.data_ptr<int64_t>(), out.data_ptr(), E, xs.size(0),
                                       row_bytes, stream),
               kGather);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("scatter_sum", &scatter_sum_cuda);
  m.impl("gather_rows", &gather_rows_cuda);
}

}  // namespace nnip_scale
