// Schemas of the channel-wise tensor product family (the MACE interaction; the namespace itself is
// defined once, in csrc/ops.cpp). Kernels: channelwise_tp/cpu/, channelwise_tp/cuda/; fake kernels,
// autograd and FLOP formulas: nnip_scale/ops/tp_native.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nnip_scale, m) {
  // The MACE interaction, fused (no per-edge message tensor):
  //   out[r, k, u] = sum_{e: receiver[e] = r} weights[e, path_of_k[k], u]
  //                  * sum_{q in pairs(k)} (sum_{n in entries(q)} entry_coeff[n] * sh[e, entry_sh[n]])
  //                  * x[sender[e], pair_x[q], u]
  // weights [E, P, C], x [A, I, C], sh [E, J], sender/receiver int64 [E] -> out [n_atoms, K, C].
  // The sparse Clebsch–Gordan tables (path_of_k [K], pair_ptr [K+1], pair_x [Q], entry_ptr [Q+1],
  // entry_sh [nnz], entry_coeff [nnz]) come from the model's plan (ChannelwiseTPPlan.native_tables).
  // dense_pairs (sum over output rows of the dim of their x segment) is not used by the kernels: it
  // makes the FLOP formula equal to what FlopCounterMode counts on the dense torch reference.
  // The optional edge layout of a receiver-sorted batch (nnip_scale.data.batching.edge_layout) spares the
  // kernels their sorts: receiver_ptr [n_atoms + 1], the segment offsets of receivers sorted ascending;
  // sender_order [E], the edges' stable order by sender (used by the backward). The CPU kernels check both
  // in one pass each (and detect sorted receivers without receiver_ptr); the CUDA kernels trust them.
  // Absent, the kernels sort (CPU: counting sort; CUDA: device sort): the result is the same bit for bit.
  m.def(
      "channelwise_tp_scatter(Tensor weights, Tensor x, Tensor sh, Tensor sender, Tensor receiver, "
      "SymInt n_atoms, Tensor path_of_k, Tensor pair_ptr, Tensor pair_x, Tensor entry_ptr, "
      "Tensor entry_sh, Tensor entry_coeff, int dense_pairs, Tensor? receiver_ptr=None, "
      "Tensor? sender_order=None) -> Tensor");
  // Its vector-Jacobian product for grad_out [N, K, C]: (grad_weights [E, P, C], grad_x [A, I, C],
  // grad_sh [E, J]); a gradient whose need_* flag is false is returned with 0 rows. The edge layout as above
  // (receiver_ptr is not read by the backward kernels: it is carried for the forward calls of the double backward).
  m.def(
      "channelwise_tp_scatter_backward(Tensor grad_out, Tensor weights, Tensor x, Tensor sh, "
      "Tensor sender, Tensor receiver, Tensor path_of_k, Tensor pair_ptr, Tensor pair_x, "
      "Tensor entry_ptr, Tensor entry_sh, Tensor entry_coeff, int dense_pairs, bool need_weights, "
      "bool need_x, bool need_sh, Tensor? receiver_ptr=None, Tensor? sender_order=None) -> (Tensor, Tensor, Tensor)");
}
