// Stand-in for the CUDA runtime header when a test runs the CUDA kernels of csrc/<family>/cuda/*.cu on
// the host through cuda_emulation.h (no CUDA toolkit needed): only the types the kernel headers name.
#pragma once
typedef int cudaError_t;
typedef struct CUstream_st* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
