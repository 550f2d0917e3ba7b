// Stand-in for the CUDA runtime header when csrc/tests/test_cuda_sc_emulated.cpp runs the CUDA kernels
// of csrc/cuda/*.cu on the host (no CUDA toolkit needed): only the types the kernel headers name.
#pragma once
typedef int cudaError_t;
typedef struct CUstream_st* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
