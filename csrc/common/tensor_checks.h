// Input checks shared by the torch glue of every native op (CPU and CUDA): each failure names the op
// and the argument, and says what was expected (docs/ops.md, "the op contract"). Step one of the glue's
// "checks -> dispatch -> launch" (csrc/common/kernels.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "common/kernels.h"

namespace nnip_scale {
namespace checks {

// The op's features x: a 3-D float32/float64 tensor (`layout` names its dims, e.g. "[A, I, C]"); every
// other floating argument is checked against its dtype and device.
inline void check_features(const at::Tensor& x, const char* op, const char* layout) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D ", layout, ", got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
}

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

// `t` has n entries along dim 0; `what` says where n comes from (e.g. "len(pair_x) + 1").
inline void check_len(const at::Tensor& t, int64_t n, const char* op, const char* name, const char* what) {
  TORCH_CHECK(t.size(0) == n, op, ": ", name, " must have ", what, " = ", n, " entries, got ", t.size(0));
}

// The values of the int64 index `idx` lie in [0, n); `bound` names n (e.g. "x.size(0)"). CPU only:
// on CUDA this would need a device-to-host copy (the CUDA kernels skip such entries instead).
inline void check_index_range(const at::Tensor& idx, int64_t n, const char* op, const char* name,
                              const char* bound, int n_threads) {
  const auto c = idx.contiguous();
  const int64_t bad = cpu::count_invalid_index(c.data_ptr<int64_t>(), c.size(0), n, n_threads);
  TORCH_CHECK(bad == 0, op, ": ", name, " has ", bad, " entries outside [0, ", bound, "=", n, ")");
}

// An optional tangent with the shape of `like` (dtype and device of x): its contiguous copy, or an
// undefined tensor when absent.
inline at::Tensor check_tangent(const std::optional<at::Tensor>& t, const at::Tensor& like,
                                const at::Tensor& x, const char* op, const char* name, const char* like_name) {
  if (!t.has_value()) return at::Tensor();
  check_float(*t, op, name, like.dim(), x);
  TORCH_CHECK(t->sizes() == like.sizes(), op, ": ", name, " must have the shape of ", like_name, " ",
              like.sizes(), ", got ", t->sizes());
  return t->contiguous();
}

// Contiguous copies of the tensors a kernel reads through raw pointers (the sparse tables), kept alive
// for the duration of the call.
class Pinned {
 public:
  template <typename T>
  const T* ptr(const at::Tensor& t) {
    keep_.push_back(t.contiguous());
    return keep_.back().data_ptr<T>();
  }

 private:
  std::vector<at::Tensor> keep_;
};

}  // namespace checks
}  // namespace nnip_scale
