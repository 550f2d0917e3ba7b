// Pure-CUDA launchers of the symmetric contraction (forward, backward, double backward): raw
// pointers + stream, no torch headers, so CMake compiles them with nvcc on machines without a GPU.
// Same tables, layouts and math as the CPU kernels (csrc/cpu/symmetric_contraction_kernels.h):
//   mono[q] = mono[mono_parent[q]] * x[mono_var[q]], basis[r] = sum coeff * mono[entry_mono],
//   out[n, k, u] = sum_{r: row_out[r] = k} W[index[n], row_weight[r], u] * basis[r].
//
// Algorithm: one thread per (atom, channel); the thread walks each coefficient's monomial up its
// parent chain (at most kMaxChainDepth factors; the product basis of correlation ν has chains of ν),
// so no per-thread monomial buffer is needed; x (and the tangent vx) of the thread's column and its
// grad_x accumulator live in shared memory. Output rows are accumulated in a register while
// consecutive rows share their output (the plan orders rows by output). The weight gradients are
// deterministic: the atoms of each element (grouped by the caller: `order`, `elem_ptr`) are cut
// into n_slices slices; one thread per (element, slice, channel) accumulates its slice's partial
// into a workspace [Z, n_slices, Wn, C], and a second kernel sums the slices in order. No atomics.
//
// The tables are not validated here (that would need a device-to-host copy; the CPU kernels check
// them, and the plan builds them): atoms whose index is outside [0, Z) get zero rows, and a
// monomial chain deeper than kMaxChainDepth yields NaN (never a silently wrong number).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace nnip_scale {
namespace cuda {

constexpr int kMaxChainDepth = 4;

struct SCTablesDevice {
  int64_t Q = 0, R = 0, nnz = 0, K = 0;
  const int64_t* mono_parent = nullptr;  // [Q]
  const int64_t* mono_var = nullptr;     // [Q]
  const int64_t* row_ptr = nullptr;      // [R + 1]
  const int64_t* entry_mono = nullptr;   // [nnz]
  const int64_t* row_out = nullptr;      // [R]
  const int64_t* row_weight = nullptr;   // [R]
};

// Slices per element for the weight gradients (depends on N only, so results do not depend on the
// GPU) and the workspace they need, in elements of the floating type.
int64_t sc_weight_slices(int64_t N, int64_t Z, int64_t Wn, int64_t C);
int64_t sc_workspace_elems(int64_t Z, int64_t Wn, int64_t C, int64_t n_slices);

// out [N, K, C] (written entirely).
cudaError_t sc_forward(const float* x, const float* w, const int64_t* index, const SCTablesDevice& t,
                       const float* coeff, float* out, int64_t N, int64_t M, int64_t Z, int64_t Wn,
                       int64_t C, cudaStream_t stream);
cudaError_t sc_forward(const double* x, const double* w, const int64_t* index, const SCTablesDevice& t,
                       const double* coeff, double* out, int64_t N, int64_t M, int64_t Z, int64_t Wn,
                       int64_t C, cudaStream_t stream);

// grad_x [N, M, C] and grad_w [Z, Wn, C] (either may be nullptr: not computed). order [N]: atom ids
// grouped by element; elem_ptr [Z + 1]: element z owns order[elem_ptr[z] .. elem_ptr[z+1]).
// workspace: sc_workspace_elems(...) elements (only used when grad_w is requested).
cudaError_t sc_backward(const float* g, const float* x, const float* w, const int64_t* index,
                        const int64_t* order, const int64_t* elem_ptr, const SCTablesDevice& t,
                        const float* coeff, float* grad_x, float* grad_w, float* workspace,
                        int64_t n_slices, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                        cudaStream_t stream);
cudaError_t sc_backward(const double* g, const double* x, const double* w, const int64_t* index,
                        const int64_t* order, const int64_t* elem_ptr, const SCTablesDevice& t,
                        const double* coeff, double* grad_x, double* grad_w, double* workspace,
                        int64_t n_slices, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                        cudaStream_t stream);

// Double backward for the tangents vx [N, M, C], vw [Z, Wn, C] (nullptr: zero): d_g [N, K, C],
// d_x [N, M, C], d_w [Z, Wn, C] (nullptr: not requested).
cudaError_t sc_double_backward(const float* g, const float* x, const float* w, const int64_t* index,
                               const int64_t* order, const int64_t* elem_ptr, const float* vx,
                               const float* vw, const SCTablesDevice& t, const float* coeff,
                               float* d_g, float* d_x, float* d_w, float* workspace, int64_t n_slices,
                               int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                               cudaStream_t stream);
cudaError_t sc_double_backward(const double* g, const double* x, const double* w, const int64_t* index,
                               const int64_t* order, const int64_t* elem_ptr, const double* vx,
                               const double* vw, const SCTablesDevice& t, const double* coeff,
                               double* d_g, double* d_x, double* d_w, double* workspace,
                               int64_t n_slices, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
