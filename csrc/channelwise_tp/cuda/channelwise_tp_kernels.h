// Pure-CUDA launchers of the fused channel-wise tensor product with gather and scatter (the MACE
// interaction) and its backward: raw pointers + stream, no torch headers, so CMake compiles them with
// nvcc on machines without a GPU. Same tables (channelwise_tp/tables.h), layouts and math as the CPU
// kernels (channelwise_tp/cpu/channelwise_tp_kernels.h):
//   out[r, k, u] = sum_{e: receiver[e] = r} w[e, path[k], u] * sum_{q in pairs(k)} m_e[q] * x[sender[e], pair_x[q], u]
//   m_e[q]       = sum_{n in entries(q)} coeff[n] * sh[e, entry_sh[n]]
//
// Algorithm (deterministic, no atomics):
//  * forward: the caller groups the edges by receiver (a stable device sort: seg_ptr [N + 1], order [E]).
//    One block per receiver segment, one thread per channel (coalesced over C). The segment's edges are
//    taken in chunks: the block first forms the chunk's m_e[q] cooperatively in shared memory, then each
//    thread adds the chunk's edges, in their original order, to its channel of the receiver's row.
//  * backward, grad_x and grad_w: the same segmented loop over the edges grouped by sender; each thread owns
//    its channel of the sender's grad_x row and writes its channel of the grad_w row of every edge it visits
//    (each edge is visited once).
//  * backward, grad_sh: one block per edge; thread q reduces d_q = sum_u g[r, k_q, u] w[e, p_k, u]
//    x[s, i_q, u] over the channels in order (a fixed order: deterministic), then thread j sums
//    grad_sh[e, j] = sum_{n: entry_sh[n] = j} coeff[n] d_{q(n)} in entry order.
//
// Not validated here (that would need a device-to-host copy; the CPU path rejects both with an error):
// the table values (the plan builds them) and the edge indices: an edge whose receiver is outside [0, N)
// is in no segment and contributes nothing; one whose sender is outside [0, A) contributes nothing and
// gets zero grad_w and grad_sh rows.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

#include "channelwise_tp/tables.h"

namespace nnip_scale {
namespace cuda {

// Edges per chunk of the segmented kernels such that their m_e (Q values each) and edge ids fit the
// default shared memory; 0 when not even one edge fits (Q too large: the launchers return
// cudaErrorInvalidValue).
int64_t tp_edge_chunk(int64_t Q, size_t elem_bytes);
// Threads per block for n parallel items (channels, or pairs/harmonics): a multiple of 32 in [32, 128].
int tp_block_threads(int64_t n);

// The launchers, templates over T = float / double (explicitly instantiated in the .cu).
// Forward: out [N, K, C] (written entirely). seg_ptr [N + 1] / order [E]: the edges grouped by receiver
// (stable: increasing edge id within a receiver); order nullptr: the edges are sorted by receiver.
template <typename T>
cudaError_t tp_forward(const T* w, const T* x, const T* sh, const int64_t* sender, const int64_t* seg_ptr,
                       const int64_t* order, const TPTables& t, const T* coeff, T* out, int64_t N, int64_t A,
                       int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream);

// Backward for grad_out g [N, K, C]. grad_w [E, P, C] (zero-initialised by the caller), grad_x [A, I, C]
// (written entirely) and grad_sh [E, J] (written entirely) may each be nullptr (not computed).
// snd_ptr [A + 1] / snd_order [E]: the edges grouped by sender (needed when grad_w or grad_x is requested).
template <typename T>
cudaError_t tp_backward(const T* g, const T* w, const T* x, const T* sh, const int64_t* sender,
                        const int64_t* receiver, const int64_t* snd_ptr, const int64_t* snd_order,
                        const TPTables& t, const T* coeff, T* grad_w, T* grad_x, T* grad_sh, int64_t E, int64_t N,
                        int64_t A, int64_t P, int64_t I, int64_t J, int64_t C, cudaStream_t stream);

}  // namespace cuda
}  // namespace nnip_scale
