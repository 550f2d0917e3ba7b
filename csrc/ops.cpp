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
}
