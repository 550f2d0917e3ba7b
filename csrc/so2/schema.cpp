// Schemas of the eSEN edge-rotation ops (a fragment of the nnip_scale library; kernels in
// csrc/so2/cpu/so2_cpu.cpp and, in the CUDA build, csrc/so2/cuda/so2_cuda.cpp; fake kernels, autograd
// and FLOP formulas in nnip_scale/ops/so2_native.py).
//
// `wigner` is the compact block-diagonal part of each edge's Wigner-D rows, [E, NB]; `block_rows`
// int64 [R, 2] holds (ℓ_r, off_r) per edge-frame row r: row r's 2ℓ_r + 1 entries are
// wigner[e, off_r : off_r + 2ℓ_r + 1] and act on the atom components ℓ_r² .. ℓ_r² + 2ℓ_r
// (nnip_scale.ops.so2_block_rows builds it from so2_layout).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nnip_scale, m) {
  // Edge-frame features: out[e, r, :C] = D_e[r]·x[src[e]], out[e, r, C:] = D_e[r]·x[dst[e]].
  // x [A, K, C], wigner [E, NB], src/dst int64 [E] in [0, A) -> out [E, R, 2C].
  m.def("so2_rotate_in(Tensor x, Tensor wigner, Tensor src, Tensor dst, Tensor block_rows) -> Tensor");
  // Its vector-Jacobian product for grad_out [E, R, 2C]: (grad_x [A, K, C], grad_wigner [E, NB]);
  // a gradient whose need_* flag is false is returned with 0 rows.
  m.def(
      "so2_rotate_in_backward(Tensor grad_out, Tensor x, Tensor wigner, Tensor src, Tensor dst, "
      "Tensor block_rows, bool need_x, bool need_wigner) -> (Tensor, Tensor)");
  // Rotate back and sum onto atoms: out[a] = sum_{e: index[e] = a} D_e^T y[e].
  // y [E, R, C], wigner [E, NB], index int64 [E] in [0, dim_size) -> out [dim_size, n_components, C].
  m.def(
      "so2_rotate_out_scatter(Tensor y, Tensor wigner, Tensor index, SymInt dim_size, Tensor block_rows, "
      "int n_components) -> Tensor");
  // Its vector-Jacobian product for grad_out [N, K, C]: (grad_y [E, R, C], grad_wigner [E, NB]).
  m.def(
      "so2_rotate_out_scatter_backward(Tensor grad_out, Tensor y, Tensor wigner, Tensor index, "
      "Tensor block_rows, bool need_y, bool need_wigner) -> (Tensor, Tensor)");
}
