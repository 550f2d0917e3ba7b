// Schemas of the symmetric-contraction family (the ACE product basis; the namespace itself is defined
// once, in csrc/ops.cpp). Kernels: symmetric_contraction/cpu/, symmetric_contraction/cuda/; fake kernels,
// autograd and FLOP formulas: nnip_scale/ops/sc_native.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nnip_scale, m) {
  // The symmetric contraction (ACE product basis) with per-element weights:
  //   mono[q]      = mono[mono_parent[q]] * x[n, mono_var[q], u]   (parent -1: x[n, var, u]; var -1: 1)
  //   out[n, k, u] = sum_{r: row_out[r] = k} weights[index[n], row_weight[r], u]
  //                  * sum_{j in row_ptr[r] .. row_ptr[r+1]} entry_coeff[j] * mono[entry_mono[j]]
  // x [N, M, C], weights [Z, Wn, C], index int64 [N] in [0, Z) -> out [N, n_out, C]. The tables
  // (mono_parent [Q], mono_var [Q], row_ptr [R+1], entry_mono [nnz], entry_coeff [nnz], row_out [R],
  // row_weight [R]) come from the model's plan (PolynomialPlan.native_tables).
  m.def(
      "symmetric_contraction(Tensor x, Tensor weights, Tensor index, Tensor mono_parent, "
      "Tensor mono_var, Tensor row_ptr, Tensor entry_mono, Tensor entry_coeff, Tensor row_out, "
      "Tensor row_weight, int n_out) -> Tensor");
  // Its vector-Jacobian product for grad_out [N, n_out, C]: (grad_x [N, M, C], grad_weights
  // [Z, Wn, C]); a gradient whose need_* flag is false is returned with 0 rows.
  m.def(
      "symmetric_contraction_backward(Tensor grad_out, Tensor x, Tensor weights, Tensor index, "
      "Tensor mono_parent, Tensor mono_var, Tensor row_ptr, Tensor entry_mono, Tensor entry_coeff, "
      "Tensor row_out, Tensor row_weight, int n_out, bool need_x, bool need_weights) "
      "-> (Tensor, Tensor)");
  // The vector-Jacobian product of the backward for the cotangents tangent_x [N, M, C] of grad_x and
  // tangent_weights [Z, Wn, C] of grad_weights (None: zero): (d_grad_out [N, n_out, C], d_x
  // [N, M, C], d_weights [Z, Wn, C]); d_grad_out is the forward-mode derivative of the forward along
  // (tangent_x, tangent_weights). Outputs whose need_* flag is false are returned with 0 rows.
  m.def(
      "symmetric_contraction_double_backward(Tensor grad_out, Tensor x, Tensor weights, "
      "Tensor index, Tensor? tangent_x, Tensor? tangent_weights, Tensor mono_parent, "
      "Tensor mono_var, Tensor row_ptr, Tensor entry_mono, Tensor entry_coeff, Tensor row_out, "
      "Tensor row_weight, int n_out, bool need_grad_out, bool need_x, bool need_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
