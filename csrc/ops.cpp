// Schemas of every native op of nnip_scale (one TORCH_LIBRARY block for the whole library).
// Kernels are registered per device with TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*.cpp;
// fake (meta) kernels, autograd and FLOP formulas are registered from Python (nnip_scale/ops/).
#include <torch/library.h>

#ifdef NNIP_PYTHON_MODULE
#include <Python.h>
// `import nnip_scale._C` loads this shared library, which runs the static registrations below.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "nnip_scale native ops", -1,
                                   nullptr};
  return PyModule_Create(&def);
}
#endif

TORCH_LIBRARY(nnip_scale, m) {
  // out[i, ...] = sum over e with index[e] == i of src[e, ...]; out has dim_size rows.
  m.def("scatter_sum(Tensor src, Tensor index, SymInt dim_size) -> Tensor");
  // out[e, ...] = x[index[e], ...] (the adjoint of scatter_sum).
  m.def("gather_rows(Tensor x, Tensor index) -> Tensor");
  // The MACE interaction, fused (no per-edge message tensor):
  //   out[r, k, u] = sum_{e: receiver[e] = r} weights[e, path_of_k[k], u]
  //                  * sum_{q in pairs(k)} (sum_{n in entries(q)} entry_coeff[n] * sh[e, entry_sh[n]])
  //                  * x[sender[e], pair_x[q], u]
  // weights [E, P, C], x [A, I, C], sh [E, J], sender/receiver int64 [E] -> out [n_atoms, K, C].
  // The sparse Clebsch–Gordan tables (path_of_k [K], pair_ptr [K+1], pair_x [Q], entry_ptr [Q+1],
  // entry_sh [nnz], entry_coeff [nnz]) come from the model's plan (ChannelwiseTPPlan.native_tables).
  // dense_pairs (sum over output rows of the dim of their x segment) is not used by the kernels: it
  // makes the FLOP formula equal to what FlopCounterMode counts on the dense torch reference.
  m.def(
      "channelwise_tp_scatter(Tensor weights, Tensor x, Tensor sh, Tensor sender, Tensor receiver, "
      "SymInt n_atoms, Tensor path_of_k, Tensor pair_ptr, Tensor pair_x, Tensor entry_ptr, "
      "Tensor entry_sh, Tensor entry_coeff, int dense_pairs) -> Tensor");
  // Its vector-Jacobian product for grad_out [N, K, C]: (grad_weights [E, P, C], grad_x [A, I, C],
  // grad_sh [E, J]); a gradient whose need_* flag is false is returned with 0 rows.
  m.def(
      "channelwise_tp_scatter_backward(Tensor grad_out, Tensor weights, Tensor x, Tensor sh, "
      "Tensor sender, Tensor receiver, Tensor path_of_k, Tensor pair_ptr, Tensor pair_x, "
      "Tensor entry_ptr, Tensor entry_sh, Tensor entry_coeff, int dense_pairs, bool need_weights, "
      "bool need_x, bool need_sh) -> (Tensor, Tensor, Tensor)");
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
