// The one dtype dispatch of the torch glue (csrc/common/kernels.h, "checks -> dispatch -> launch"):
// maps a ScalarType to the float / double instantiation of a templated kernel.
#pragma once

#include <ATen/ATen.h>

namespace nnip_scale {

// Calls f(T{}) with T = float for float32 and T = double for float64 and returns its result; any other
// dtype is an error naming the op and the dtype. Use with a generic lambda:
//   dispatch_float(op, x.scalar_type(), [&](auto tag) { using T = decltype(tag); kernel<T>(x.data_ptr<T>(), ...); });
template <typename F>
decltype(auto) dispatch_float(const char* op, at::ScalarType dtype, F&& f) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": dtype ", dtype,
              " is not supported by the native kernels (supported: float32, float64)");
  if (dtype == at::kFloat) return f(float{});
  return f(double{});
}

}  // namespace nnip_scale
