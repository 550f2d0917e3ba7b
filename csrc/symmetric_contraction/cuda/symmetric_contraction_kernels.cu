// CUDA kernels of the symmetric contraction, its backward and its double backward. See
// symmetric_contraction_kernels.h for the contract and the algorithm.
#include "symmetric_contraction/cuda/symmetric_contraction_kernels.h"

#include <algorithm>
#include <cmath>

namespace nnip_scale {
namespace cuda {
namespace {

constexpr int kMaxThreads = 128;
constexpr size_t kSharedBytes = 48 * 1024;  // the default dynamic shared-memory limit per block
constexpr int64_t kMaxWorkspace = int64_t{1} << 26;

template <typename T>
__device__ __forceinline__ T nan_value() {
  return static_cast<T>(NAN);
}

// The x rows of monomial q (its chain to the root), at most kMaxChainDepth; -1 when deeper.
__device__ __forceinline__ int monomial_chain(const SCTables& t, int64_t q, int* v) {
  int d = 0;
  while (q >= 0) {
    const int64_t var = __ldg(t.mono_var + q);
    if (var < 0) break;  // the constant monomial (its parent is -1)
    if (d == kMaxChainDepth) return -1;
    v[d++] = static_cast<int>(var);
    q = __ldg(t.mono_parent + q);
  }
  return d;
}

// prod_{j != skip} xs[v_j] (column stride bd)
template <typename T>
__device__ __forceinline__ T chain_product(const T* xs, const int* v, int d, int skip, int bd) {
  T p = T(1);
  for (int j = 0; j < d; ++j)
    if (j != skip) p *= xs[v[j] * bd];
  return p;
}

// sum_{j != skip} vxs[v_j] prod_{l != skip, j} xs[v_l]: the tangent of the chain without factor skip
template <typename T>
__device__ __forceinline__ T chain_tangent(const T* xs, const T* vxs, const int* v, int d, int skip, int bd) {
  T s = T(0);
  for (int j = 0; j < d; ++j) {
    if (j == skip) continue;
    T p = vxs[v[j] * bd];
    for (int l = 0; l < d; ++l)
      if (l != skip && l != j) p *= xs[v[l] * bd];
    s += p;
  }
  return s;
}

// basis[r] (and its tangent along vxs when dbasis != nullptr) of the thread's column
template <typename T>
__device__ __forceinline__ void row_basis(const SCTables& t, const T* __restrict__ coeff, int64_t r,
                                          const T* xs, const T* vxs, int bd, T* basis, T* dbasis) {
  T b = T(0), db = T(0);
  int v[kMaxChainDepth];
  for (int64_t e = __ldg(t.row_ptr + r); e < __ldg(t.row_ptr + r + 1); ++e) {
    const T c = __ldg(coeff + e);
    const int d = monomial_chain(t, __ldg(t.entry_mono + e), v);
    if (d < 0) {
      b = db = nan_value<T>();
      break;
    }
    b += c * chain_product(xs, v, d, -1, bd);
    if (dbasis) db += c * chain_tangent(xs, vxs, v, d, -1, bd);
  }
  *basis = b;
  if (dbasis) *dbasis = db;
}

// ------------------------------------------------------------------------------- forward
template <typename T>
__global__ void sc_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const int64_t* __restrict__ index,
                                  SCTables t, const T* __restrict__ coeff, T* __restrict__ out, int64_t N,
                                  int64_t M, int64_t Z, int64_t Wn, int64_t C) {
  extern __shared__ unsigned char smem_raw[];
  const int bd = blockDim.x, tid = threadIdx.x;
  T* xs = reinterpret_cast<T*>(smem_raw) + tid;
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(bd) + tid; i < total; i += static_cast<int64_t>(gridDim.x) * bd) {
    const int64_t n = i / C, u = i - n * C;
    const int64_t z = __ldg(index + n);
    T* oc = out + n * t.K * C + u;
    for (int64_t k = 0; k < t.K; ++k) oc[k * C] = T(0);
    if (z < 0 || z >= Z) continue;
    for (int64_t m = 0; m < M; ++m) xs[m * bd] = x[(n * M + m) * C + u];
    const T* wc = w + z * Wn * C + u;
    int64_t cur = -1;
    T acc = T(0);
    for (int64_t r = 0; r < t.R; ++r) {
      T b;
      row_basis<T>(t, coeff, r, xs, nullptr, bd, &b, nullptr);
      const int64_t k = __ldg(t.row_out + r);
      if (k != cur) {
        if (cur >= 0) oc[cur * C] += acc;
        cur = k;
        acc = T(0);
      }
      acc += wc[__ldg(t.row_weight + r) * C] * b;
    }
    if (cur >= 0) oc[cur * C] += acc;
  }
}

// ------------------------------------------------------------------------------- grad_x, d_g, d_x
// One thread per (atom, channel). Backward (MODE 0): gx = d/dx <g, F>. Double backward (MODE 1):
// dg = W·dbasis + vW·basis, dx = d/dx <g, W·dbasis + vW·basis>.
template <typename T, int MODE>
__global__ void sc_atom_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                               const int64_t* __restrict__ index, const T* __restrict__ vx, const T* __restrict__ vw,
                               SCTables t, const T* __restrict__ coeff, T* __restrict__ out_g,
                               T* __restrict__ out_x, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C) {
  extern __shared__ unsigned char smem_raw[];
  const int bd = blockDim.x, tid = threadIdx.x;
  T* base = reinterpret_cast<T*>(smem_raw);
  T* xs = base + tid;
  T* vxs = base + M * bd + tid;      // MODE 1 with vx
  T* acc_x = base + 2 * M * bd + tid;  // out_x accumulator
  const bool has_vx = MODE == 1 && vx != nullptr, has_vw = MODE == 1 && vw != nullptr;
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(bd) + tid; i < total; i += static_cast<int64_t>(gridDim.x) * bd) {
    const int64_t n = i / C, u = i - n * C;
    const int64_t z = __ldg(index + n);
    T* ogc = out_g ? out_g + n * t.K * C + u : nullptr;
    T* oxc = out_x ? out_x + n * M * C + u : nullptr;
    if (ogc)
      for (int64_t k = 0; k < t.K; ++k) ogc[k * C] = T(0);
    if (z < 0 || z >= Z) {
      if (oxc)
        for (int64_t m = 0; m < M; ++m) oxc[m * C] = T(0);
      continue;
    }
    for (int64_t m = 0; m < M; ++m) {
      xs[m * bd] = x[(n * M + m) * C + u];
      if (has_vx) vxs[m * bd] = vx[(n * M + m) * C + u];
      if (oxc) acc_x[m * bd] = T(0);
    }
    const T* wc = w + z * Wn * C + u;
    const T* vwc = has_vw ? vw + z * Wn * C + u : nullptr;
    const T* gc = g ? g + n * t.K * C + u : nullptr;
    bool bad = false;
    int64_t cur = -1;
    T acc = T(0);
    int v[kMaxChainDepth];
    for (int64_t r = 0; r < t.R; ++r) {
      const int64_t k = __ldg(t.row_out + r), wr = __ldg(t.row_weight + r);
      const T wv = wc[wr * C];
      const T vwv = has_vw ? vwc[wr * C] : T(0);
      const T gk = (gc && oxc) ? gc[k * C] : T(0);
      const T G = MODE == 0 ? gk * wv : T(0);  // cotangent of basis (backward)
      const T Gd = gk * wv, H = gk * vwv;      // cotangents of dbasis / basis (double backward)
      T b = T(0), db = T(0);
      for (int64_t e = __ldg(t.row_ptr + r); e < __ldg(t.row_ptr + r + 1); ++e) {
        const T c = __ldg(coeff + e);
        const int d = monomial_chain(t, __ldg(t.entry_mono + e), v);
        if (d < 0) {
          bad = true;
          continue;
        }
        if (MODE == 1 && ogc) {
          if (has_vw) b += c * chain_product(xs, v, d, -1, bd);
          if (has_vx) db += c * chain_tangent(xs, vxs, v, d, -1, bd);
        }
        if (!oxc) continue;
        for (int p = 0; p < d; ++p) {
          T dx;
          if (MODE == 0) {
            dx = c * G * chain_product(xs, v, d, p, bd);
          } else {
            dx = has_vw ? c * H * chain_product(xs, v, d, p, bd) : T(0);
            if (has_vx) dx += c * Gd * chain_tangent(xs, vxs, v, d, p, bd);
          }
          acc_x[v[p] * bd] += dx;
        }
      }
      if (MODE == 1 && ogc) {
        if (k != cur) {
          if (cur >= 0) ogc[cur * C] += acc;
          cur = k;
          acc = T(0);
        }
        acc += (has_vx ? wv * db : T(0)) + vwv * b;
      }
    }
    if (MODE == 1 && ogc && cur >= 0) ogc[cur * C] += acc;
    if (ogc && bad)
      for (int64_t k = 0; k < t.K; ++k) ogc[k * C] = nan_value<T>();
    if (oxc)
      for (int64_t m = 0; m < M; ++m) oxc[m * C] = bad ? nan_value<T>() : acc_x[m * bd];
  }
}

// ------------------------------------------------------------------------------- weight gradients
// One thread per (element z, slice s, channel u): partial[z, s, w, u] = sum over the slice's atoms of
// sum_{r: row_weight = w} g[n, k_r, u] * basis_r (TANGENT = false: grad_W) or * dbasis_r along vx
// (TANGENT = true: d_W of the double backward).
template <typename T, bool TANGENT>
__global__ void sc_weight_partial_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ vx,
                                         const int64_t* __restrict__ order, const int64_t* __restrict__ elem_ptr,
                                         SCTables t, const T* __restrict__ coeff, T* __restrict__ partial,
                                         int64_t S, int64_t M, int64_t Z, int64_t Wn, int64_t C) {
  extern __shared__ unsigned char smem_raw[];
  const int bd = blockDim.x, tid = threadIdx.x;
  T* base = reinterpret_cast<T*>(smem_raw);
  T* xs = base + tid;
  T* vxs = base + M * bd + tid;
  const int64_t total = Z * S * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(bd) + tid; i < total; i += static_cast<int64_t>(gridDim.x) * bd) {
    const int64_t zs = i / C, u = i - zs * C;
    const int64_t z = zs / S, s = zs - z * S;
    const int64_t begin = __ldg(elem_ptr + z), count = __ldg(elem_ptr + z + 1) - begin;
    const int64_t a0 = begin + count * s / S, a1 = begin + count * (s + 1) / S;
    T* pc = partial + zs * Wn * C + u;
    for (int64_t wr = 0; wr < Wn; ++wr) pc[wr * C] = T(0);
    for (int64_t a = a0; a < a1; ++a) {
      const int64_t n = __ldg(order + a);
      for (int64_t m = 0; m < M; ++m) {
        xs[m * bd] = x[(n * M + m) * C + u];
        if (TANGENT) vxs[m * bd] = vx[(n * M + m) * C + u];
      }
      const T* gc = g + n * t.K * C + u;
      for (int64_t r = 0; r < t.R; ++r) {
        T b, db;
        row_basis<T>(t, coeff, r, xs, TANGENT ? vxs : nullptr, bd, &b, TANGENT ? &db : nullptr);
        pc[__ldg(t.row_weight + r) * C] += gc[__ldg(t.row_out + r) * C] * (TANGENT ? db : b);
      }
    }
  }
}

// grad_w[z, w, u] = sum_s partial[z, s, w, u], slices in order.
template <typename T>
__global__ void sc_reduce_slices_kernel(const T* __restrict__ partial, T* __restrict__ grad_w, int64_t S, int64_t Z,
                                        int64_t Wn, int64_t C) {
  const int64_t total = Z * Wn * C, row = Wn * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t z = i / row, rest = i - z * row;
    T acc = T(0);
    for (int64_t s = 0; s < S; ++s) acc += partial[(z * S + s) * row + rest];
    grad_w[i] = acc;
  }
}

// ------------------------------------------------------------------------------- launch helpers
// (NNIP_CUDA_EMULATION: symmetric_contraction/tests/test_cuda_sc_emulated.cpp includes this file into a
// host program that runs the kernels above on the CPU, csrc/tests/emulation/; the launchers are left out.)
#ifndef NNIP_CUDA_EMULATION
struct Launch {
  int blocks = 0, threads = 0;
  size_t smem = 0;
};

// Threads per block such that `arrays` shared columns of M values fit the default shared memory.
Launch launch_for(int64_t total, int arrays, int64_t M, size_t elem) {
  Launch l;
  const size_t per_thread = static_cast<size_t>(arrays) * static_cast<size_t>(M) * elem;
  int64_t threads = kMaxThreads;
  if (per_thread > 0) threads = std::min<int64_t>(kMaxThreads, static_cast<int64_t>(kSharedBytes / per_thread) / 32 * 32);
  if (threads < 32) return l;  // too many x rows for one warp's columns in shared memory
  l.threads = static_cast<int>(threads);
  l.smem = per_thread * static_cast<size_t>(threads);
  const int64_t blocks = (total + threads - 1) / threads, cap = 65535LL * 8;
  l.blocks = static_cast<int>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
  return l;
}

template <typename T>
cudaError_t forward_impl(const T* x, const T* w, const int64_t* index, const SCTables& t, const T* coeff,
                         T* out, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || t.K <= 0) return cudaSuccess;
  const Launch l = launch_for(N * C, 1, M, sizeof(T));
  if (l.threads == 0) return cudaErrorInvalidValue;
  sc_forward_kernel<T><<<l.blocks, l.threads, l.smem, stream>>>(x, w, index, t, coeff, out, N, M, Z, Wn, C);
  return cudaGetLastError();
}

template <typename T, bool TANGENT>
cudaError_t weights_impl(const T* g, const T* x, const T* vx, const int64_t* order, const int64_t* elem_ptr,
                         const SCTables& t, const T* coeff, T* grad_w, T* workspace, int64_t S, int64_t M,
                         int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream) {
  if (Z <= 0 || Wn <= 0 || C <= 0) return cudaSuccess;
  const Launch l = launch_for(Z * S * C, TANGENT ? 2 : 1, M, sizeof(T));
  if (l.threads == 0) return cudaErrorInvalidValue;
  sc_weight_partial_kernel<T, TANGENT><<<l.blocks, l.threads, l.smem, stream>>>(g, x, vx, order, elem_ptr, t, coeff,
                                                                               workspace, S, M, Z, Wn, C);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const Launch r = launch_for(Z * Wn * C, 0, 0, sizeof(T));
  sc_reduce_slices_kernel<T><<<r.blocks, r.threads, 0, stream>>>(workspace, grad_w, S, Z, Wn, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                          const int64_t* elem_ptr, const SCTables& t, const T* coeff, T* grad_x, T* grad_w,
                          T* workspace, int64_t S, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                          cudaStream_t stream) {
  if (grad_x && N > 0 && C > 0) {
    const Launch l = launch_for(N * C, 3, M, sizeof(T));
    if (l.threads == 0) return cudaErrorInvalidValue;
    sc_atom_kernel<T, 0><<<l.blocks, l.threads, l.smem, stream>>>(g, x, w, index, nullptr, nullptr, t, coeff, nullptr,
                                                                  grad_x, N, M, Z, Wn, C);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_w) return weights_impl<T, false>(g, x, nullptr, order, elem_ptr, t, coeff, grad_w, workspace, S, M, Z, Wn, C,
                                            stream);
  return cudaSuccess;
}

template <typename T>
cudaError_t double_backward_impl(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                                 const int64_t* elem_ptr, const T* vx, const T* vw, const SCTables& t,
                                 const T* coeff, T* d_g, T* d_x, T* d_w, T* workspace, int64_t S, int64_t N, int64_t M,
                                 int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream) {
  if ((d_g || d_x) && N > 0 && C > 0) {
    const Launch l = launch_for(N * C, 3, M, sizeof(T));
    if (l.threads == 0) return cudaErrorInvalidValue;
    sc_atom_kernel<T, 1><<<l.blocks, l.threads, l.smem, stream>>>(g, x, w, index, vx, vw, t, coeff, d_g, d_x, N, M, Z,
                                                                  Wn, C);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (d_w) {
    if (!vx)  // d_W = sum g·dbasis vanishes without a tangent of x
      return cudaMemsetAsync(d_w, 0, sizeof(T) * static_cast<size_t>(Z * Wn * C), stream);
    return weights_impl<T, true>(g, x, vx, order, elem_ptr, t, coeff, d_w, workspace, S, M, Z, Wn, C, stream);
  }
  return cudaSuccess;
}

#endif  // NNIP_CUDA_EMULATION

}  // namespace

int64_t sc_weight_slices(int64_t N, int64_t Z, int64_t Wn, int64_t C) {
  int64_t s = (N + 31) / 32;
  s = s < 1 ? 1 : (s > 128 ? 128 : s);
  const int64_t per_slice = Z * Wn * C;
  if (per_slice > 0 && s * per_slice > kMaxWorkspace) s = std::max<int64_t>(1, kMaxWorkspace / per_slice);
  return s;
}

int64_t sc_workspace_elems(int64_t Z, int64_t Wn, int64_t C, int64_t n_slices) { return Z * n_slices * Wn * C; }

#ifndef NNIP_CUDA_EMULATION

template <typename T>
cudaError_t sc_forward(const T* x, const T* w, const int64_t* index, const SCTables& t, const T* coeff, T* out,
                       int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream) {
  return forward_impl(x, w, index, t, coeff, out, N, M, Z, Wn, C, stream);
}

template <typename T>
cudaError_t sc_backward(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                        const int64_t* elem_ptr, const SCTables& t, const T* coeff, T* grad_x, T* grad_w,
                        T* workspace, int64_t n_slices, int64_t N, int64_t M, int64_t Z, int64_t Wn, int64_t C,
                        cudaStream_t stream) {
  return backward_impl(g, x, w, index, order, elem_ptr, t, coeff, grad_x, grad_w, workspace, n_slices, N, M, Z, Wn, C,
                       stream);
}

template <typename T>
cudaError_t sc_double_backward(const T* g, const T* x, const T* w, const int64_t* index, const int64_t* order,
                               const int64_t* elem_ptr, const T* vx, const T* vw, const SCTables& t, const T* coeff,
                               T* d_g, T* d_x, T* d_w, T* workspace, int64_t n_slices, int64_t N, int64_t M,
                               int64_t Z, int64_t Wn, int64_t C, cudaStream_t stream) {
  return double_backward_impl(g, x, w, index, order, elem_ptr, vx, vw, t, coeff, d_g, d_x, d_w, workspace, n_slices, N,
                              M, Z, Wn, C, stream);
}

#define NNIP_SC_INSTANTIATE(T)                                                                                      \
  template cudaError_t sc_forward<T>(const T*, const T*, const int64_t*, const SCTables&, const T*, T*, int64_t,   \
                                     int64_t, int64_t, int64_t, int64_t, cudaStream_t);                           \
  template cudaError_t sc_backward<T>(const T*, const T*, const T*, const int64_t*, const int64_t*, const int64_t*, \
                                      const SCTables&, const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t,   \
                                      int64_t, int64_t, cudaStream_t);                                              \
  template cudaError_t sc_double_backward<T>(const T*, const T*, const T*, const int64_t*, const int64_t*,          \
                                             const int64_t*, const T*, const T*, const SCTables&, const T*, T*, T*, \
                                             T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,          \
                                             cudaStream_t);
NNIP_SC_INSTANTIATE(float)
NNIP_SC_INSTANTIATE(double)
#undef NNIP_SC_INSTANTIATE

#endif  // NNIP_CUDA_EMULATION

}  // namespace cuda
}  // namespace nnip_scale
