// Schemas of the scatter family (the namespace itself is defined once, in csrc/ops.cpp).
// Kernels: scatter/cpu/scatter_cpu.cpp, scatter/cuda/scatter_cuda.cpp; fake kernels, autograd and FLOP
// formulas are registered from Python (nnip_scale/ops/).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nnip_scale, m) {
  // out[i, ...] = sum over e with index[e] == i of src[e, ...]; out has dim_size rows.
  m.def("scatter_sum(Tensor src, Tensor index, SymInt dim_size) -> Tensor");
  // out[e, ...] = x[index[e], ...] (the adjoint of scatter_sum).
  m.def("gather_rows(Tensor x, Tensor index) -> Tensor");
}
