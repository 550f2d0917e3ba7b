// CPU kernels of nnip_scale::scatter_sum and nnip_scale::gather_rows (OpenMP, see scatter_kernels.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "scatter_kernels.h"

namespace nnip_scale {
namespace {

void check_common(const at::Tensor& t, const at::Tensor& index, const char* op, const char* name) {
  TORCH_CHECK(index.dim() == 1, op, ": index must be 1-D [E], got shape ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, op, ": index must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least 1 dim, got a scalar");
  TORCH_CHECK(t.device() == index.device(), op, ": ", name, " and index must be on the same device, got ",
              t.device(), " and ", index.device());
}

int64_t row_width(const at::Tensor& t) {
  int64_t F = 1;
  for (int64_t d = 1; d < t.dim(); ++d) F *= t.size(d);
  return F;
}

at::Tensor scatter_sum_cpu(const at::Tensor& src, const at::Tensor& index, int64_t dim_size) {
  check_common(src, index, "nnip_scale::scatter_sum", "src");
  TORCH_CHECK(src.size(0) == index.size(0), "nnip_scale::scatter_sum: src has ", src.size(0),
              " rows but index has ", index.size(0), " entries");
  TORCH_CHECK(dim_size >= 0, "nnip_scale::scatter_sum: dim_size must be >= 0, got ", dim_size);
  const int64_t E = src.size(0), F = row_width(src);
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  const int64_t bad = cpu::count_invalid_index(idx.data_ptr<int64_t>(), E, dim_size, nt);
  TORCH_CHECK(bad == 0, "nnip_scale::scatter_sum: ", bad, " index entries are outside [0, ",
              dim_size, ")");
  auto out_sizes = src.sizes().vec();
  out_sizes[0] = dim_size;
  const auto dtype = src.scalar_type();
  if (dtype == at::kBFloat16 || dtype == at::kHalf) {  // accumulate in fp32, round once
    return scatter_sum_cpu(src.to(at::kFloat), idx, dim_size).to(dtype);
  }
  auto s = src.contiguous();
  auto out = at::empty(out_sizes, s.options());
  if (dim_size == 0) return out;
  if (E == 0 || F == 0) return out.zero_();
  // Per-thread accumulators for the edge-parallel schedule (see scatter_kernels.h).
  at::Tensor scratch;
  if (nt > 1 && E >= 4 * dim_size && E * F >= 32768) {
    scratch = at::empty({(nt - 1) * dim_size * F}, s.options());
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "nnip_scale_scatter_sum_cpu", [&] {
    cpu::scatter_sum_rows<scalar_t>(s.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                                    out.data_ptr<scalar_t>(), E, F, dim_size, nt,
                                    scratch.defined() ? scratch.data_ptr<scalar_t>() : nullptr);
  });
  return out;
}

at::Tensor gather_rows_cpu(const at::Tensor& x, const at::Tensor& index) {
  check_common(x, index, "nnip_scale::gather_rows", "x");
  const int64_t N = x.size(0), E = index.size(0), F = row_width(x);
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  const int64_t bad = cpu::count_invalid_index(idx.data_ptr<int64_t>(), E, N, nt);
  TORCH_CHECK(bad == 0, "nnip_scale::gather_rows: ", bad, " index entries are outside [0, ", N,
              ")");
  auto out_sizes = x.sizes().vec();
  out_sizes[0] = E;
  auto xs = x.contiguous();
  auto out = at::empty(out_sizes, xs.options());
  if (E == 0 || F == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, xs.scalar_type(),
                                  "nnip_scale_gather_rows_cpu", [&] {
    cpu::gather_rows<scalar_t>(xs.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                               out.data_ptr<scalar_t>(), E, F, nt);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("scatter_sum", &scatter_sum_cpu);
  m.impl("gather_rows", &gather_rows_cpu);
}

}  // namespace nnip_scale
