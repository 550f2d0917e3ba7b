// The nnip_scale operator library: this file owns the namespace (the one TORCH_LIBRARY block) and the
// Python module init. Each kernel family adds its schemas with TORCH_LIBRARY_FRAGMENT in
// csrc/<family>/schema.cpp and its kernels with TORCH_LIBRARY_IMPL in csrc/<family>/cpu/*.cpp and
// csrc/<family>/cuda/*.cpp; fake (meta) kernels, autograd and FLOP formulas are registered from Python
// (nnip_scale/ops/). The files are listed in csrc/sources.txt (read by setup.py and CMakeLists.txt).
#include <torch/library.h>

#ifdef NNIP_PYTHON_MODULE
#include <Python.h>
// `import nnip_scale._C` loads this shared library, which runs the static registrations of all files.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "nnip_scale native ops", -1, nullptr};
  return PyModule_Create(&def);
}
#endif

TORCH_LIBRARY(nnip_scale, m) {
  // the schemas are fragments, one per family: scatter/, channelwise_tp/, symmetric_contraction/ schema.cpp
  (void)m;
}
