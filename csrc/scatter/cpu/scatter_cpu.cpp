// CPU kernels of nnip_scale::scatter_sum and nnip_scale::gather_rows (OpenMP, see scatter_kernels.h):
// checks (scatter/glue.h) -> dtype dispatch -> kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/dispatch.h"
#include "scatter/cpu/scatter_kernels.h"
#include "scatter/glue.h"

namespace nnip_scale {
namespace {

using namespace scatter_glue;

int64_t count_invalid(const at::Tensor& idx, int64_t n, int nt) {
  return cpu::count_invalid_index(idx.data_ptr<int64_t>(), idx.size(0), n, nt);
}

at::Tensor scatter_sum_cpu(const at::Tensor& src, const at::Tensor& index, int64_t dim_size) {
  check_scatter(src, index, dim_size);
  const int64_t E = src.size(0), F = row_width(src);
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  const int64_t bad = count_invalid(idx, dim_size, nt);
  TORCH_CHECK(bad == 0, kScatter, ": ", bad, " index entries are outside [0, ", dim_size, ")");
  const auto dtype = src.scalar_type();
  if (dtype == at::kBFloat16 || dtype == at::kHalf) {  // accumulate in fp32, round once
    return scatter_sum_cpu(src.to(at::kFloat), idx, dim_size).to(dtype);
  }
  auto s = src.contiguous();
  auto out = at::empty(with_rows(s, dim_size), s.options());
  if (dim_size == 0) return out;
  if (E == 0 || F == 0) return out.zero_();
  // Per-thread accumulators for the edge-parallel schedule (see scatter_kernels.h).
  at::Tensor scratch;
  if (nt > 1 && E >= 4 * dim_size && E * F >= 32768) {
    scratch = at::empty({(nt - 1) * dim_size * F}, s.options());
  }
  dispatch_float(kScatter, dtype, [&](auto tag) {
    using T = decltype(tag);
    cpu::scatter_sum_rows<T>(s.data_ptr<T>(), idx.data_ptr<int64_t>(), out.data_ptr<T>(), E, F, dim_size, nt,
                             scratch.defined() ? scratch.data_ptr<T>() : nullptr);
  });
  return out;
}

at::Tensor gather_rows_cpu(const at::Tensor& x, const at::Tensor& index) {
  check_index(x, index, kGather, "x");
  const int64_t N = x.size(0), E = index.size(0);
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  const int64_t bad = count_invalid(idx, N, nt);
  TORCH_CHECK(bad == 0, kGather, ": ", bad, " index entries are outside [0, ", N, ")");
  auto xs = x.contiguous();
  auto out = at::empty(with_rows(xs, E), xs.options());
  // a row copy: any dtype, as bytes
  const int64_t row_bytes = row_width(xs) * static_cast<int64_t>(xs.element_size());
  if (E == 0 || row_bytes == 0) return out;
  cpu::gather_rows<unsigned char>(static_cast<const unsigned char*>(xs.data_ptr()), idx.data_ptr<int64_t>(),
                                  static_cast<unsigned char*>(out.data_ptr()), E, row_bytes, nt);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("scatter_sum", &scatter_sum_cpu);
  m.impl("gather_rows", &gather_rows_cpu);
}

}  // namespace nnip_scale
