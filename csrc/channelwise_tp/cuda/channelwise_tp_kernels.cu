// CUDA kernels of the fused channel-wise tensor product (the MACE interaction) and its backward. See
// channelwise_tp_kernels.h for the contract and the algorithm.
#include "channelwise_tp/cuda/channelwise_tp_kernels.h"

namespace nnip_scale {
namespace cuda {
namespace {

constexpr size_t kSharedBytes = 48 * 1024;  // the default dynamic shared-memory limit per block
constexpr int64_t kMaxChunk = 32;           // edges per chunk of the segmented kernels
constexpr int kMaxThreads = 128;
constexpr int64_t kMaxBlocks = 65535LL * 16;

// Shared memory of one chunk: edge ids [chunk], other endpoints [chunk] (int64), m_e [chunk][Q] (T).
__host__ __device__ inline size_t chunk_bytes(int64_t chunk, int64_t Q, size_t elem) {
  return static_cast<size_t>(chunk) * (2 * sizeof(int64_t) + static_cast<size_t>(Q) * elem);
}

// The output row k of pair q: pair_ptr[k] <= q < pair_ptr[k + 1] (binary search; pair_ptr is non-decreasing
// from 0 to Q, so exactly one k holds q).
__device__ inline int64_t row_of_pair(const TPTables& t, int64_t q) {
  int64_t lo = 0, hi = t.K;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (__ldg(t.pair_ptr + mid) <= q) lo = mid;
    else hi = mid;
  }
  return lo;
}

// Loads chunk [c0, c0 + n) of a segment into shared memory (segment positions index `order`, or are the
// edge ids themselves when order is nullptr: edges already sorted by the segment key): its edge ids, their other endpoint (the
// sender in the forward, the receiver in the backward; -1 when outside [0, n_other)) and their m_e[q].
// Every thread of the block calls it (the caller synchronises before and after).
template <typename T>
__device__ inline void load_chunk(const TPTables& t, const T* __restrict__ coeff, const T* __restrict__ sh,
                                  const int64_t* __restrict__ order, const int64_t* __restrict__ other,
                                  int64_t n_other, int64_t c0, int64_t n, int64_t J, int64_t* eid, int64_t* oth,
                                  T* m) {
  const int bd = blockDim.x, tid = threadIdx.x;
  for (int64_t i = tid; i < n; i += bd) {
    const int64_t e = order ? __ldg(order + c0 + i) : c0 + i, o = __ldg(other + e);
    eid[i] = e;
    oth[i] = (o >= 0 && o < n_other) ? o : -1;
  }
  for (int64_t i = tid; i < n * t.Q; i += bd) {
    const int64_t el = i / t.Q, q = i - el * t.Q;
    m[i] = pair_coefficient(t, coeff, sh + (order ? __ldg(order + c0 + el) : c0 + el) * J, q);
  }
}

// ------------------------------------------------------------------------------- forward
// One block per receiver r (grid-stride), one thread per channel u: out[r, :, u] over the receiver's edges,
// in their original order, chunk by chunk.
template <typename T>
__global__ void tp_forward_kernel(const T* __restrict__ w, const T* __restrict__ x, const T* __restrict__ sh,
                                  const int64_t* __restrict__ sender, const int64_t* __restrict__ seg_ptr,
                                  const int64_t* __restrict__ order, TPTables t, const T* __restrict__ coeff,
                                  T* __restrict__ out, int64_t N, int64_t A, int64_t P, int64_t I, int64_t J,
                                  int64_t C, int64_t chunk) {
  extern __shared__ unsigned char smem_raw[];
  int64_t* eid = reinterpret_cast<int64_t*>(smem_raw);
  int64_t* snd = eid + chunk;
  T* m = reinterpret_cast<T*>(snd + chunk);
  const int bd = blockDim.x, tid = threadIdx.x;
  const int64_t K = t.K, Q = t.Q;
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int64_t begin = __ldg(seg_ptr + r), end = __ldg(seg_ptr + r + 1);
    T* out_r = out + r * K * C;
    if (begin == end) {  // the whole block takes this branch: no barrier is skipped by part of it
      for (int64_t u = tid; u < C; u += bd)
        for (int64_t k = 0; k < K; ++k) out_r[k * C + u] = T(0);
      continue;
    }
    for (int64_t c0 = begin; c0 < end; c0 += chunk) {
      const int64_t n = end - c0 < chunk ? end - c0 : chunk;
      __syncthreads();  // the previous chunk is no longer read
      load_chunk(t, coeff, sh, order, sender, A, c0, n, J, eid, snd, m);
      __syncthreads();
      for (int64_t u = tid; u < C; u += bd) {
        for (int64_t k = 0; k < K; ++k) {
          const int64_t q0 = __ldg(t.pair_ptr + k), q1 = __ldg(t.pair_ptr + k + 1);
          T acc = c0 == begin ? T(0) : out_r[k * C + u];
          if (q0 < q1) {
            const int64_t p = __ldg(t.path_of_k + k);
            for (int64_t el = 0; el < n; ++el) {
              const int64_t s = snd[el];
              if (s < 0) continue;
              const T* xs = x + s * I * C + u;
              const T* ml = m + el * Q;
              T tmp = ml[q0] * xs[__ldg(t.pair_x + q0) * C];
              for (int64_t q = q0 + 1; q < q1; ++q) tmp += ml[q] * xs[__ldg(t.pair_x + q) * C];
              acc += w[(eid[el] * P + p) * C + u] * tmp;
            }
          }
          out_r[k * C + u] = acc;
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------- backward: grad_x, grad_w
// One block per sender s (grid-stride), one thread per channel u: grad_x[s, :, u] (owned) over the sender's
// edges in their original order, and grad_w[e, :, u] of each of them (grad_w zero-initialised).
template <typename T>
__global__ void tp_backward_sender_kernel(const T* __restrict__ g, const T* __restrict__ w, const T* __restrict__ x,
                                          const T* __restrict__ sh, const int64_t* __restrict__ receiver,
                                          const int64_t* __restrict__ seg_ptr, const int64_t* __restrict__ order,
                                          TPTables t, const T* __restrict__ coeff, T* __restrict__ grad_w,
                                          T* __restrict__ grad_x, int64_t N, int64_t A, int64_t P, int64_t I,
                                          int64_t J, int64_t C, int64_t chunk) {
  extern __shared__ unsigned char smem_raw[];
  int64_t* eid = reinterpret_cast<int64_t*>(smem_raw);
  int64_t* rcv = eid + chunk;
  T* m = reinterpret_cast<T*>(rcv + chunk);
  const int bd = blockDim.x, tid = threadIdx.x;
  const int64_t K = t.K, Q = t.Q;
  for (int64_t s = blockIdx.x; s < A; s += gridDim.x) {
    const int64_t begin = __ldg(seg_ptr + s), end = __ldg(seg_ptr + s + 1);
    T* gx_s = grad_x ? grad_x + s * I * C : nullptr;
    if (gx_s)
      for (int64_t u = tid; u < C; u += bd)
        for (int64_t i = 0; i < I; ++i) gx_s[i * C + u] = T(0);
    const T* xs_base = x + s * I * C;
    for (int64_t c0 = begin; c0 < end; c0 += chunk) {
      const int64_t n = end - c0 < chunk ? end - c0 : chunk;
      __syncthreads();
      load_chunk(t, coeff, sh, order, receiver, N, c0, n, J, eid, rcv, m);
      __syncthreads();
      for (int64_t u = tid; u < C; u += bd) {
        const T* xs = xs_base + u;
        for (int64_t el = 0; el < n; ++el) {
          const int64_t r = rcv[el], e = eid[el];
          if (r < 0) continue;
          const T* gr = g + r * K * C + u;
          const T* we = w + e * P * C + u;
          T* gwe = grad_w ? grad_w + e * P * C + u : nullptr;
          const T* ml = m + el * Q;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t q0 = __ldg(t.pair_ptr + k), q1 = __ldg(t.pair_ptr + k + 1);
            if (q0 == q1) continue;
            const int64_t p = __ldg(t.path_of_k + k);
            const T gk = gr[k * C];
            if (gx_s) {
              const T gw = gk * we[p * C];
              for (int64_t q = q0; q < q1; ++q) gx_s[__ldg(t.pair_x + q) * C + u] += ml[q] * gw;
            }
            if (gwe) {
              T tmp = T(0);
              for (int64_t q = q0; q < q1; ++q) tmp += ml[q] * xs[__ldg(t.pair_x + q) * C];
              gwe[p * C] += gk * tmp;
            }
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------- backward: grad_sh
// One block per edge e (grid-stride): thread q sums d_q over the channels in order (shared memory), then
// thread j sums grad_sh[e, j] over the coefficients of harmonic j in entry order. Deterministic.
template <typename T>
__global__ void tp_grad_sh_kernel(const T* __restrict__ g, const T* __restrict__ w, const T* __restrict__ x,
                                  const int64_t* __restrict__ sender, const int64_t* __restrict__ receiver,
                                  TPTables t, const T* __restrict__ coeff, T* __restrict__ grad_sh, int64_t E,
                                  int64_t N, int64_t A, int64_t P, int64_t I, int64_t J, int64_t C) {
  extern __shared__ unsigned char smem_raw[];
  T* dq = reinterpret_cast<T*>(smem_raw);
  const int bd = blockDim.x, tid = threadIdx.x;
  const int64_t K = t.K, Q = t.Q;
  for (int64_t e = blockIdx.x; e < E; e += gridDim.x) {
    const int64_t s = __ldg(sender + e), r = __ldg(receiver + e);
    const bool valid = s >= 0 && s < A && r >= 0 && r < N;
    __syncthreads();  // the previous edge's d_q are no longer read
    for (int64_t q = tid; q < Q; q += bd) {
      T d = T(0);
      if (valid) {
        const int64_t k = row_of_pair(t, q);
        const T* gk = g + (r * K + k) * C;
        const T* wp = w + (e * P + __ldg(t.path_of_k + k)) * C;
        const T* xi = x + (s * I + __ldg(t.pair_x + q)) * C;
        for (int64_t u = 0; u < C; ++u) d += gk[u] * wp[u] * xi[u];
      }
      dq[q] = d;
    }
    __syncthreads();
    for (int64_t j = tid; j < J; j += bd) {
      T acc = T(0);
      for (int64_t q = 0; q < Q; ++q)
        for (int64_t n = __ldg(t.entry_ptr + q); n < __ldg(t.entry_ptr + q + 1); ++n)
          if (__ldg(t.entry_sh + n) == j) acc += __ldg(coeff + n) * dq[q];
      grad_sh[e * J + j] = acc;
    }
  }
}

// ------------------------------------------------------------------------------- launch helpers
// (NNIP_CUDA_EMULATION: channelwise_tp/tests/test_cuda_tp_emulated.cpp includes this file into a host
// program that runs the kernels above on the CPU, csrc/tests/emulation/; the launchers are left out.)
#ifndef NNIP_CUDA_EMULATION
int grid_for(int64_t n) { return static_cast<int>(n < 1 ? 1 : (n < kMaxBlocks ? n : kMaxBlocks)); }

template <typename T>
cudaError_t forward_impl(const T* w, const T* x, const T* sh, const int64_t* sender, const int64_t* seg_ptr,
                         const int64_t* order, const TPTables& t, const T* coeff, T* out, int64_t N, int64_t A,
                         int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || t.K <= 0) return cudaSuccess;
  const int64_t chunk = tp_edge_chunk(t.Q, sizeof(T));
  if (chunk == 0) return cudaErrorInvalidValue;
  tp_forward_kernel<T><<<grid_for(N), tp_block_threads(C), chunk_bytes(chunk, t.Q, sizeof(T)), stream>>>(
      w, x, sh, sender, seg_ptr, order, t, coeff, out, N, A, P, I, J, C, chunk);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(const T* g, const T* w, const T* x, const T* sh, const int64_t* sender,
                          const int64_t* receiver, const int64_t* snd_ptr, const int64_t* snd_order,
                          const TPTables& t, const T* coeff, T* grad_w, T* grad_x, T* grad_sh, int64_t E, int64_t N,
                          int64_t A, int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream) {
  if ((grad_w || grad_x) && A > 0 && C > 0) {
    const int64_t chunk = tp_edge_chunk(t.Q, sizeof(T));
    if (chunk == 0) return cudaErrorInvalidValue;
    tp_backward_sender_kernel<T><<<grid_for(A), tp_block_threads(C), chunk_bytes(chunk, t.Q, sizeof(T)), stream>>>(
        g, w, x, sh, receiver, snd_ptr, snd_order, t, coeff, grad_w, grad_x, N, A, P, I, J, C, chunk);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_sh && E > 0 && J > 0) {
    const size_t smem = static_cast<size_t>(t.Q) * sizeof(T);
    if (smem > kSharedBytes) return cudaErrorInvalidValue;
    tp_grad_sh_kernel<T><<<grid_for(E), tp_block_threads(t.Q > J ? t.Q : J), smem, stream>>>(
        g, w, x, sender, receiver, t, coeff, grad_sh, E, N, A, P, I, J, C);
    return cudaGetLastError();
  }
  return cudaSuccess;
}
#endif  // NNIP_CUDA_EMULATION

}  // namespace

int64_t tp_edge_chunk(int64_t Q, size_t elem_bytes) {
  const size_t per_edge = chunk_bytes(1, Q, elem_bytes);
  const int64_t fit = static_cast<int64_t>(kSharedBytes / per_edge);
  return fit < 1 ? 0 : (fit < kMaxChunk ? fit : kMaxChunk);
}

int tp_block_threads(int64_t n) {
  const int64_t warps = (n + 31) / 32;
  const int64_t threads = 32 * (warps < 1 ? 1 : warps);
  return static_cast<int>(threads < kMaxThreads ? threads : kMaxThreads);
}

#ifndef NNIP_CUDA_EMULATION
template <typename T>
cudaError_t tp_forward(const T* w, const T* x, const T* sh, const int64_t* sender, const int64_t* seg_ptr,
                       const int64_t* order, const TPTables& t, const T* coeff, T* out, int64_t N, int64_t A,
                       int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream) {
  return forward_impl(w, x, sh, sender, seg_ptr, order, t, coeff, out, N, A, P, I, J, C, stream);
}

template <typename T>
cudaError_t tp_backward(const T* g, const T* w, const T* x, const T* sh, const int64_t* sender,
                        const int64_t* receiver, const int64_t* snd_ptr, const int64_t* snd_order,
                        const TPTables& t, const T* coeff, T* grad_w, T* grad_x, T* grad_sh, int64_t E, int64_t N,
                        int64_t A, int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream) {
  return backward_impl(g, w, x, sh, sender, receiver, snd_ptr, snd_order, t, coeff, grad_w, grad_x, grad_sh, E, N, A,
                       P, I, J, C, stream);
}

#define NNIP_TP_INSTANTIATE(T)                                                                                    \
  template cudaError_t tp_forward<T>(const T*, const T*, const T*, const int64_t*, const int64_t*, const int64_t*, \
                                     const TPTables&, const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                                     int64_t, cudaStream_t);                                                        \
  template cudaError_t tp_backward<T>(const T*, const T*, const T*, const T*, const int64_t*, const int64_t*,      \
                                      const int64_t*, const int64_t*, const TPTables&, const T*, T*, T*, T*,        \
                                      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
NNIP_TP_INSTANTIATE(float)
NNIP_TP_INSTANTIATE(double)
#undef NNIP_TP_INSTANTIATE
#endif  // NNIP_CUDA_EMULATION

}  // namespace cuda
}  // namespace nnip_scale
