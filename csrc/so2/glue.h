// Argument checks and the block_rows table shared by the CPU and CUDA glue of nnip_scale::so2_rotate_in,
// so2_rotate_out_scatter and their backward ops (step "checks" of csrc/common/kernels.h). Everything
// here looks at shapes, dtypes and devices only, except where `validate` is set (CPU: host memory),
// which also checks the values of block_rows; the CPU glue range-checks the indices itself. The CUDA
// glue cannot do either without a device-to-host copy (the CUDA kernels guard against both instead:
// csrc/so2/cuda/so2_kernels.h).
#pragma once

#include <ATen/ATen.h>

#include "common/tensor_checks.h"
#include "so2/cpu/so2_kernels.h"

namespace nnip_scale {
namespace so2_glue {

constexpr const char* kIn = "nnip_scale::so2_rotate_in";
constexpr const char* kInBwd = "nnip_scale::so2_rotate_in_backward";
constexpr const char* kOut = "nnip_scale::so2_rotate_out_scatter";
constexpr const char* kOutBwd = "nnip_scale::so2_rotate_out_scatter_backward";

// The contiguous block_rows table and its view (rows points into `t`: host memory on CPU, device
// memory on CUDA).
struct Rows {
  at::Tensor t;
  so2::BlockRows b;
};

// block_rows int64 [R, 2] on the device of `ref`; with `validate` also its values against NB compact
// entries per edge and K components per atom (so2::check_rows, O(R)).
inline Rows make_rows(const char* op, const at::Tensor& block_rows, const at::Tensor& ref, int64_t NB, int64_t K,
                      bool validate) {
  TORCH_CHECK(block_rows.dim() == 2 && block_rows.size(1) == 2, op,
              ": block_rows must be [R, 2] (degree, offset per edge-frame row), got shape ", block_rows.sizes());
  TORCH_CHECK(block_rows.scalar_type() == at::kLong, op, ": block_rows must be int64, got ",
              block_rows.scalar_type());
  TORCH_CHECK(block_rows.device() == ref.device(), op, ": block_rows must be on the device of x (", ref.device(),
              "), got ", block_rows.device());
  Rows rows{block_rows.contiguous(), {}};
  rows.b.R = block_rows.size(0);
  rows.b.rows = rows.t.data_ptr<int64_t>();
  if (validate) {
    const char* bad = so2::check_rows(rows.b, NB, K);
    TORCH_CHECK(bad == nullptr, op, ": inconsistent block_rows (NB = ", NB, ", K = ", K, "): ", bad ? bad : "");
  }
  return rows;
}

// The features x (rotate-in) or y (rotate-out): 3-D float32/float64.
inline void check_features(const char* op, const char* name, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, op, ": ", name, " must be 3-D, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", x.scalar_type());
}

// An edge index [E] (E = wigner.size(0)), int64 on the device of `ref`.
inline void check_edge_index(const char* op, const char* name, const at::Tensor& idx, const at::Tensor& wigner,
                             const at::Tensor& ref) {
  checks::check_long(idx, op, name, ref);
  checks::check_len(idx, wigner.size(0), op, name, "E = wigner.size(0)");
}

// ------------------------------------------------------------------------------------- rotate in
// x [A, K, C], wigner [E, NB], src/dst int64 [E]; block_rows [R, 2] (validated with `validate`).
inline Rows check_rotate_in(const char* op, const at::Tensor& x, const at::Tensor& wigner, const at::Tensor& src,
                            const at::Tensor& dst, const at::Tensor& block_rows, bool validate) {
  check_features(op, "x", x);
  checks::check_float(wigner, op, "wigner", 2, x);
  check_edge_index(op, "src", src, wigner, x);
  check_edge_index(op, "dst", dst, wigner, x);
  return make_rows(op, block_rows, x, wigner.size(1), x.size(1), validate);
}

// The backward's grad_out [E, R, 2C].
inline void check_rotate_in_grad(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& wigner,
                                 const Rows& rows) {
  checks::check_float(grad_out, kInBwd, "grad_out", 3, x);
  const int64_t E = wigner.size(0), C = x.size(2);
  TORCH_CHECK(grad_out.size(0) == E && grad_out.size(1) == rows.b.R && grad_out.size(2) == 2 * C, kInBwd,
              ": grad_out must be [E=", E, ", R=", rows.b.R, ", 2C=", 2 * C, "], got ", grad_out.sizes());
}

// ----------------------------------------------------------------------------- rotate out + scatter
// y [E, R, C], wigner [E, NB], index int64 [E].
inline void check_rotate_out(const char* op, const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index) {
  check_features(op, "y", y);
  checks::check_float(wigner, op, "wigner", 2, y);
  check_edge_index(op, "index", index, wigner, y);
  TORCH_CHECK(y.size(0) == wigner.size(0), op, ": y must have E = wigner.size(0) = ", wigner.size(0),
              " rows, got ", y.size(0));
}

// y's R rows per edge against block_rows.
inline void check_rows_of_y(const char* op, const at::Tensor& y, const Rows& rows) {
  TORCH_CHECK(y.size(1) == rows.b.R, op, ": y must have R = block_rows.size(0) = ", rows.b.R, " rows per edge, got ",
              y.size(1));
}

// The forward: dim_size >= 0 atoms of n_components >= 1 components; block_rows (validated with `validate`).
inline Rows check_rotate_out_forward(const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
                                     int64_t dim_size, const at::Tensor& block_rows, int64_t n_components,
                                     bool validate) {
  check_rotate_out(kOut, y, wigner, index);
  TORCH_CHECK(dim_size >= 0, kOut, ": dim_size must be >= 0, got ", dim_size);
  TORCH_CHECK(n_components >= 1, kOut, ": n_components must be >= 1, got ", n_components);
  Rows rows = make_rows(kOut, block_rows, y, wigner.size(1), n_components, validate);
  check_rows_of_y(kOut, y, rows);
  return rows;
}

// The backward: grad_out [N, K, C]; block_rows (validated with `validate`) against its K.
inline Rows check_rotate_out_backward(const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& wigner,
                                      const at::Tensor& index, const at::Tensor& block_rows, bool validate) {
  check_rotate_out(kOutBwd, y, wigner, index);
  checks::check_float(grad_out, kOutBwd, "grad_out", 3, y);
  TORCH_CHECK(grad_out.size(2) == y.size(2), kOutBwd, ": grad_out must be [N, K, C=", y.size(2), "], got ",
              grad_out.sizes());
  Rows rows = make_rows(kOutBwd, block_rows, y, wigner.size(1), grad_out.size(1), validate);
  check_rows_of_y(kOutBwd, y, rows);
  return rows;
}

}  // namespace so2_glue
}  // namespace nnip_scale
