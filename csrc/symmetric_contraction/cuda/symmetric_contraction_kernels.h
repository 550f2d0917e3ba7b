// Pure-CUDA launchers of the symmetric contraction (forward, backward, double backward): raw
// pointers + stream, no torch headers, so CMake compiles them with nvcc on machines without a GPU.
// Same tables (symmetric_contraction/tables.h), layouts and math as the CPU kernels
// (symmetric_contraction/cpu/symmetric_contraction_kernels.h):
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

#include "symmetric_contraction/tables.h"

namespace nnip_scale {
namespace cuda {

constexpr int kMaxChainDepth = 4;

// Slices per element for the weight gradients (depends on N only, so results do not depend on the
// GPU) and the workspace they need, in elements of the floating type.
int64_t sc_weight_slices(int64_t N, int64_t Z, int64_t Wn, int64_t C);
int64_t sc_workspace_elems(int64_t Z, int64_t Wn, int64_t C, int64_t n_slices);

// The launchers, templates over T = float / double (explicitly instantiated in the .cu).
// out [N, K, C] (written entirely).
template <typename T>
cudaError_t sc_forward(const T* x, const T* w, const int64_t* index, const SCTables& t, const T* coeff, T* out,
                       int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream);

// grad_x [N, M, C] and grad_w [Z, Wn, C] (either may be nullptr: not computed). order [N]: atom ids
// grouped by element; elem_ptr [Z + 1]: element z owns order[elem_ptr[z] .. elem_ptr[z+1]).
// workspace: sc_workspace_elems(...) elements (only used when grad_w is requested).
template <typename T>
cudaError_t sc_backward(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                        const int64_t* elem_ptr, const SCTables& t, const T* coeff, T* grad_x, T* grad_w,
                        T* workspace, int64_t n_slices, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                        cudaStream_t stream);

// Double backward for the tangents vx [N, M, C], vw [Z, Wn, C] (nullptr: zero): d_g [N, K, C],
// d_x [N, M, C], d_w [Z, Wn, C] (nullptr: not requested).
template <typename T>
cudaError_t sc_double_backward(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                               const int64_t* elem_ptr, const T* vx, const T* vw, const SCTables& t, const T* coeff,
                               T* d_g, T* d_x, T* d_w, T* workspace, int64_t n_slices, int64_t N, int64_t M,
                               int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
