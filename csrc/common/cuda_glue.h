// Shared by the torch glue of the CUDA kernels (<family>/cuda/*_cuda.cpp; CUDA build of setup.py only).
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

namespace nnip_scale {
namespace checks {

// A launcher's cudaError_t: anything but cudaSuccess is an error naming the op; `hint` says what an
// invalid launch configuration means for this op (may be empty).
inline void check_launch(cudaError_t err, const char* op, const char* hint = "") {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err), hint);
}

}  // namespace checks
}  // namespace nnip_scale
