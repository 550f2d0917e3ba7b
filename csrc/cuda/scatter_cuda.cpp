// Torch glue for the CUDA kernels (compiled only in the CUDA build of setup.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "scatter_kernels.h"

namespace nnip_scale {
namespace {

void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

int64_t row_width(const at::Tensor& t) {
  int64_t F = 1;
  for (int64_t d = 1; d < t.dim(); ++d) F *= t.size(d);
  return F;
}

void check_index(const at::Tensor& t, const at::Tensor& index, const char* op) {
  TORCH_CHECK(index.dim() == 1, op, ": index must be 1-D [E], got shape ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, op, ": index must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(t.dim() >= 1, op, ": input must have at least 1 dim, got a scalar");
  TORCH_CHECK(t.device() == index.device(), op, ": input and index must be on the same device, got ",
              t.device(), " and ", index.device());
}

at::Tensor scatter_sum_cuda(const at::Tensor& src, const at::Tensor& index, int64_t dim_size) {
  const char* op = "nnip_scale::scatter_sum";
  check_index(src, index, op);
  TORCH_CHECK(src.size(0) == index.size(0), op, ": src has ", src.size(0), " rows but index has ",
              index.size(0), " entries");
  TORCH_CHECK(dim_size >= 0, op, ": dim_size must be >= 0, got ", dim_size);
  c10::cuda::CUDAGuard guard(src.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto s = src.contiguous();
  auto idx = index.contiguous();
  const int64_t E = s.size(0), F = row_width(s);
  auto sizes = s.sizes().vec();
  sizes[0] = dim_size;
  const auto dtype = s.scalar_type();
  if (dtype == at::kFloat || dtype == at::kDouble) {
    auto out = at::zeros(sizes, s.options());
    if (dtype == at::kFloat) {
      check_cuda(cuda::scatter_sum_f32(s.data_ptr<float>(), idx.data_ptr<int64_t>(),
                                       out.data_ptr<float>(), E, F, dim_size, stream), op);
    } else {
      check_cuda(cuda::scatter_sum_f64(s.data_ptr<double>(), idx.data_ptr<int64_t>(),
                                       out.data_ptr<double>(), E, F, dim_size, stream), op);
    }
    return out;
  }
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, op,
              ": supported dtypes on CUDA are float32, float64, bfloat16, float16; got ", dtype);
  auto acc = at::zeros(sizes, s.options().dtype(at::kFloat));  // accumulate in fp32
  if (dtype == at::kBFloat16) {
    check_cuda(cuda::scatter_sum_bf16_acc_f32(s.data_ptr(), idx.data_ptr<int64_t>(),
                                              acc.data_ptr<float>(), E, F, dim_size, stream), op);
  } else {
    check_cuda(cuda::scatter_sum_f16_acc_f32(s.data_ptr(), idx.data_ptr<int64_t>(),
                                             acc.data_ptr<float>(), E, F, dim_size, stream), op);
  }
  return acc.to(dtype);
}

at::Tensor gather_rows_cuda(const at::Tensor& x, const at::Tensor& index) {
  const char* op = "nnip_scale::gather_rows";
  check_index(x, index, op);
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto xs = x.contiguous();
  auto idx = index.contiguous();
  const int64_t E = idx.size(0);
  auto sizes = xs.sizes().vec();
  sizes[0] = E;
  auto out = at::empty(sizes, xs.options());
  const int64_t row_bytes = row_width(xs) * static_cast<int64_t>(xs.element_size());
  check_cuda(cuda::gather_rows_bytes(xs.data_ptr(), idx.data_ptr<int64_t>(), out.data_ptr(), E,
                                     xs.size(0), row_bytes, stream), op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("scatter_sum", &scatter_sum_cuda);
  m.impl("gather_rows", &gather_rows_cuda);
}

}  // namespace nnip_scale
