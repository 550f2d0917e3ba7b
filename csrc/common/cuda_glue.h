// Shared by the torch glue of the CUDA kernels (<family>/cuda/*_cuda.cpp; CUDA build of setup.py only).
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <tuple>

namespace nnip_scale {
namespace checks {

// A launcher's cudaError_t: anything but cudaSuccess is an error naming the op; `hint` says what an
// invalid launch configuration means for this op (may be empty).
inline void check_launch(cudaError_t err, const char* op, const char* hint = "") {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err), hint);
}

}  // namespace checks

// The items grouped by `key` on the device, as the scatter kernels read them: (ptr [n + 1], order [E]),
// order stable (increasing item id within a key); keys outside [0, n) fall outside every segment. A
// stable device sort and a searchsorted: no host sync.
inline std::tuple<at::Tensor, at::Tensor> group_by_key(const at::Tensor& key, int64_t n) {
  at::Tensor sorted, order;
  std::tie(sorted, order) = at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto ptr = at::searchsorted(sorted, at::arange(n + 1, key.options()));  // first position with sorted >= k
  return {ptr, order};
}

}  // namespace nnip_scale
