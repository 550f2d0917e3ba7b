// Argument checks and shapes shared by the CPU and CUDA glue of scatter_sum / gather_rows.
#pragma once

#include <ATen/ATen.h>

namespace nnip_scale {
namespace scatter_glue {

constexpr const char* kScatter = "nnip_scale::scatter_sum";
constexpr const char* kGather = "nnip_scale::gather_rows";

// index is int64 [E] on the device of `t` (the op's src or x, at least 1-D).
inline void check_index(const at::Tensor& t, const at::Tensor& index, const char* op, const char* name) {
  TORCH_CHECK(index.dim() == 1, op, ": index must be 1-D [E], got shape ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, op, ": index must be int64, got ", index.scalar_type());
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least 1 dim, got a scalar");
  TORCH_CHECK(t.device() == index.device(), op, ": ", name, " and index must be on the same device, got ",
              t.device(), " and ", index.device());
}

// scatter_sum's checks: src [E, F...] with one index entry per row, dim_size >= 0.
inline void check_scatter(const at::Tensor& src, const at::Tensor& index, int64_t dim_size) {
  check_index(src, index, kScatter, "src");
  TORCH_CHECK(src.size(0) == index.size(0), kScatter, ": src has ", src.size(0), " rows but index has ",
              index.size(0), " entries");
  TORCH_CHECK(dim_size >= 0, kScatter, ": dim_size must be >= 0, got ", dim_size);
}

// Values per row: the product of the trailing dims.
inline int64_t row_width(const at::Tensor& t) {
  int64_t F = 1;
  for (int64_t d = 1; d < t.dim(); ++d) F *= t.size(d);
  return F;
}

// The shape of `t` with `rows` rows.
inline std::vector<int64_t> with_rows(const at::Tensor& t, int64_t rows) {
  auto sizes = t.sizes().vec();
  sizes[0] = rows;
  return sizes;
}

}  // namespace scatter_glue
}  // namespace nnip_scale
