// Input checks shared by the torch glue of every native op (CPU and CUDA): each failure names the op
// and the argument, and says what was expected (docs/ops.md, "the op contract").
#pragma once

#include <ATen/ATen.h>

namespace nnip_scale {
namespace checks {

// `t` is a `dim`-D float32/float64 tensor with the dtype and device of `ref` (the op's x).
inline void check_float(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                        const at::Tensor& ref) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of x (",
              ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of x (",
              ref.device(), "), got ", t.device());
}

// `t` is a 1-D int64 tensor on the device of `ref`.
inline void check_long(const at::Tensor& t, const char* op, const char* name, const at::Tensor& ref) {
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of x (",
              ref.device(), "), got ", t.device());
}

}  // namespace checks
}  // namespace nnip_scale
