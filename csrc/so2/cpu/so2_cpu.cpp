// CPU kernels of nnip_scale::so2_rotate_in, so2_rotate_out_scatter and their backward ops (OpenMP,
// see so2_kernels.h): argument checks naming the op and the argument, dtype dispatch (float32,
// float64), the receiver sort, and the calls into the raw kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "common/tensor_checks.h"
#include "so2/cpu/so2_kernels.h"

namespace nnip_scale {
namespace {

constexpr const char* kIn = "nnip_scale::so2_rotate_in";
constexpr const char* kInBwd = "nnip_scale::so2_rotate_in_backward";
constexpr const char* kOut = "nnip_scale::so2_rotate_out_scatter";
constexpr const char* kOutBwd = "nnip_scale::so2_rotate_out_scatter_backward";

using checks::check_float;  // csrc/common/tensor_checks.h
using checks::check_long;

void check_index(const at::Tensor& idx, int64_t E, int64_t n, const char* op, const char* name,
                 const char* bound) {
  TORCH_CHECK(idx.size(0) == E, op, ": ", name, " must have E = wigner.size(0) = ", E, " entries, got ",
              idx.size(0));
  const int64_t* p = idx.data_ptr<int64_t>();
  int64_t bad = 0;
  for (int64_t e = 0; e < E; ++e) bad += (p[e] < 0 || p[e] >= n) ? 1 : 0;
  TORCH_CHECK(bad == 0, op, ": ", name, " has ", bad, " entries outside [0, ", bound, "=", n, ")");
}

// The contiguous block_rows table and its view; checked against NB and K.
struct Rows {
  at::Tensor t;
  so2::BlockRows b;
};

Rows make_rows(const char* op, const at::Tensor& block_rows, const at::Tensor& ref, int64_t NB, int64_t K) {
  TORCH_CHECK(block_rows.dim() == 2 && block_rows.size(1) == 2, op,
              ": block_rows must be [R, 2] (degree, offset per edge-frame row), got shape ", block_rows.sizes());
  TORCH_CHECK(block_rows.scalar_type() == at::kLong, op, ": block_rows must be int64, got ",
              block_rows.scalar_type());
  TORCH_CHECK(block_rows.device() == ref.device(), op, ": block_rows must be on the device of x (", ref.device(),
              "), got ", block_rows.device());
  Rows rows{block_rows.contiguous(), {}};
  rows.b.R = block_rows.size(0);
  rows.b.rows = rows.t.data_ptr<int64_t>();
  const char* bad = so2::check_rows(rows.b, NB, K);
  TORCH_CHECK(bad == nullptr, op, ": inconsistent block_rows (NB = ", NB, ", K = ", K, "): ", bad ? bad : "");
  return rows;
}

void check_x(const char* op, const char* name, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, op, ": ", name, " must be 3-D, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", x.scalar_type());
}

// ------------------------------------------------------------------------------------- rotate in
void check_rotate_in(const char* op, const at::Tensor& x, const at::Tensor& wigner, const at::Tensor& src,
                     const at::Tensor& dst) {
  check_x(op, "x", x);
  check_float(wigner, op, "wigner", 2, x);
  check_long(src, op, "src", x);
  check_long(dst, op, "dst", x);
}

at::Tensor so2_rotate_in_cpu(const at::Tensor& x, const at::Tensor& wigner, const at::Tensor& src,
                             const at::Tensor& dst, const at::Tensor& block_rows) {
  check_rotate_in(kIn, x, wigner, src, dst);
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  Rows rows = make_rows(kIn, block_rows, x, NB, K);
  auto s = src.contiguous(), d = dst.contiguous();
  check_index(s, E, A, kIn, "src", "x.size(0)");
  check_index(d, E, A, kIn, "dst", "x.size(0)");
  auto out = at::empty({E, rows.b.R, 2 * C}, x.options());
  if (out.numel() == 0) return out;
  auto xs = x.contiguous(), w = wigner.contiguous();
  const int nt = at::get_num_threads();
  const int64_t* idx[2] = {s.data_ptr<int64_t>(), d.data_ptr<int64_t>()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_so2_rotate_in_cpu", [&] {
    so2::rotate_gather<scalar_t>(xs.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), idx, 2, rows.b,
                                 out.data_ptr<scalar_t>(), E, K, C, NB, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_in_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                              const at::Tensor& wigner, const at::Tensor& src,
                                                              const at::Tensor& dst, const at::Tensor& block_rows,
                                                              bool need_x, bool need_wigner) {
  check_rotate_in(kInBwd, x, wigner, src, dst);
  check_float(grad_out, kInBwd, "grad_out", 3, x);
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  Rows rows = make_rows(kInBwd, block_rows, x, NB, K);
  TORCH_CHECK(grad_out.size(0) == E && grad_out.size(1) == rows.b.R && grad_out.size(2) == 2 * C, kInBwd,
              ": grad_out must be [E=", E, ", R=", rows.b.R, ", 2C=", 2 * C, "], got ", grad_out.sizes());
  auto s = src.contiguous(), d = dst.contiguous();
  check_index(s, E, A, kInBwd, "src", "x.size(0)");
  check_index(d, E, A, kInBwd, "dst", "x.size(0)");
  at::Tensor gx = at::empty({need_x ? A : 0, K, C}, x.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, x.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), xs = x.contiguous();
  const int nt = at::get_num_threads();
  const int64_t* idx[2] = {s.data_ptr<int64_t>(), d.data_ptr<int64_t>()};
  if (need_x && gx.numel() > 0) {
    auto ptr = at::empty({2, A + 1}, s.options());
    auto order = at::empty({2, E}, s.options());
    const int64_t* ptrs[2] = {ptr.data_ptr<int64_t>(), ptr.data_ptr<int64_t>() + (A + 1)};
    const int64_t* orders[2] = {order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + E};
    for (int h = 0; h < 2; ++h)
      so2::sort_by_key(idx[h], E, A, const_cast<int64_t*>(ptrs[h]), const_cast<int64_t*>(orders[h]));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_so2_rotate_in_backward_cpu_x", [&] {
      so2::rotate_scatter<scalar_t>(g.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptrs, orders, 2, rows.b,
                                    gx.data_ptr<scalar_t>(), A, E, K, C, NB, nt);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_so2_rotate_in_backward_cpu_w", [&] {
      so2::wigner_grad<scalar_t>(g.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), idx, 2, rows.b,
                                 gw.data_ptr<scalar_t>(), E, K, C, NB, nt);
    });
  }
  return {gx, gw};
}

// ----------------------------------------------------------------------------- rotate out + scatter
void check_rotate_out(const char* op, const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index) {
  check_x(op, "y", y);
  check_float(wigner, op, "wigner", 2, y);
  check_long(index, op, "index", y);
  TORCH_CHECK(y.size(0) == wigner.size(0), op, ": y must have E = wigner.size(0) = ", wigner.size(0),
              " rows, got ", y.size(0));
}

at::Tensor so2_rotate_out_scatter_cpu(const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
                                      int64_t dim_size, const at::Tensor& block_rows, int64_t n_components) {
  check_rotate_out(kOut, y, wigner, index);
  TORCH_CHECK(dim_size >= 0, kOut, ": dim_size must be >= 0, got ", dim_size);
  TORCH_CHECK(n_components >= 1, kOut, ": n_components must be >= 1, got ", n_components);
  const int64_t E = y.size(0), C = y.size(2), NB = wigner.size(1), K = n_components;
  Rows rows = make_rows(kOut, block_rows, y, NB, K);
  TORCH_CHECK(y.size(1) == rows.b.R, kOut, ": y must have R = block_rows.size(0) = ", rows.b.R, " rows per edge, got ",
              y.size(1));
  auto idx = index.contiguous();
  check_index(idx, E, dim_size, kOut, "index", "dim_size");
  auto out = at::empty({dim_size, K, C}, y.options());
  if (out.numel() == 0) return out;
  auto ptr = at::empty({dim_size + 1}, idx.options());
  auto order = at::empty({E}, idx.options());
  so2::sort_by_key(idx.data_ptr<int64_t>(), E, dim_size, ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>());
  auto ys = y.contiguous(), w = wigner.contiguous();
  const int nt = at::get_num_threads();
  const int64_t* ptrs[1] = {ptr.data_ptr<int64_t>()};
  const int64_t* orders[1] = {order.data_ptr<int64_t>()};
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "nnip_scale_so2_rotate_out_scatter_cpu", [&] {
    so2::rotate_scatter<scalar_t>(ys.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptrs, orders, 1, rows.b,
                                  out.data_ptr<scalar_t>(), dim_size, E, K, C, NB, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_out_scatter_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
    const at::Tensor& block_rows, bool need_y, bool need_wigner) {
  check_rotate_out(kOutBwd, y, wigner, index);
  check_float(grad_out, kOutBwd, "grad_out", 3, y);
  const int64_t E = y.size(0), C = y.size(2), NB = wigner.size(1), N = grad_out.size(0), K = grad_out.size(1);
  TORCH_CHECK(grad_out.size(2) == C, kOutBwd, ": grad_out must be [N, K, C=", C, "], got ", grad_out.sizes());
  Rows rows = make_rows(kOutBwd, block_rows, y, NB, K);
  TORCH_CHECK(y.size(1) == rows.b.R, kOutBwd, ": y must have R = block_rows.size(0) = ", rows.b.R,
              " rows per edge, got ", y.size(1));
  auto idx = index.contiguous();
  check_index(idx, E, N, kOutBwd, "index", "grad_out.size(0)");
  at::Tensor gy = at::empty({need_y ? E : 0, rows.b.R, C}, y.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, y.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), ys = y.contiguous();
  const int nt = at::get_num_threads();
  const int64_t* ip[1] = {idx.data_ptr<int64_t>()};
  if (need_y && gy.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "nnip_scale_so2_rotate_out_scatter_backward_cpu_y", [&] {
      so2::rotate_gather<scalar_t>(g.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ip, 1, rows.b,
                                   gy.data_ptr<scalar_t>(), E, K, C, NB, nt);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "nnip_scale_so2_rotate_out_scatter_backward_cpu_w", [&] {
      so2::wigner_grad<scalar_t>(ys.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), ip, 1, rows.b,
                                 gw.data_ptr<scalar_t>(), E, K, C, NB, nt);
    });
  }
  return {gy, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("so2_rotate_in", &so2_rotate_in_cpu);
  m.impl("so2_rotate_in_backward", &so2_rotate_in_backward_cpu);
  m.impl("so2_rotate_out_scatter", &so2_rotate_out_scatter_cpu);
  m.impl("so2_rotate_out_scatter_backward", &so2_rotate_out_scatter_backward_cpu);
}

}  // namespace nnip_scale
