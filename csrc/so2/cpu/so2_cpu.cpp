// CPU kernels of nnip_scale::so2_rotate_in, so2_rotate_out_scatter and their backward ops (OpenMP,
// see so2_kernels.h): argument checks naming the op and the argument (so2/glue.h, shared with the CUDA
// glue, plus the range checks of the indices and block_rows values), dtype dispatch (common/dispatch.h:
// float32, float64), the receiver sort, and the calls into the raw kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "common/dispatch.h"
#include "common/tensor_checks.h"
#include "so2/cpu/so2_kernels.h"
#include "so2/glue.h"

namespace nnip_scale {
namespace {

using namespace so2_glue;  // the checks shared with the CUDA glue (so2/glue.h)

// On CPU the tables and indices are host memory: their values are checked too.
constexpr bool kValidate = true;

// ------------------------------------------------------------------------------------- rotate in
at::Tensor so2_rotate_in_cpu(const at::Tensor& x, const at::Tensor& wigner, const at::Tensor& src,
                             const at::Tensor& dst, const at::Tensor& block_rows) {
  Rows rows = check_rotate_in(kIn, x, wigner, src, dst, block_rows, kValidate);
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  const int nt = at::get_num_threads();
  auto s = src.contiguous(), d = dst.contiguous();
  checks::check_index_range(s, A, kIn, "src", "x.size(0)", nt);
  checks::check_index_range(d, A, kIn, "dst", "x.size(0)", nt);
  auto out = at::empty({E, rows.b.R, 2 * C}, x.options());
  if (out.numel() == 0) return out;
  auto xs = x.contiguous(), w = wigner.contiguous();
  const int64_t* idx[2] = {s.data_ptr<int64_t>(), d.data_ptr<int64_t>()};
  dispatch_float(kIn, x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    so2::rotate_gather<scalar_t>(xs.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), idx, 2, rows.b,
                                 out.data_ptr<scalar_t>(), E, K, C, NB, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_in_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                              const at::Tensor& wigner, const at::Tensor& src,
                                                              const at::Tensor& dst, const at::Tensor& block_rows,
                                                              bool need_x, bool need_wigner) {
  Rows rows = check_rotate_in(kInBwd, x, wigner, src, dst, block_rows, kValidate);
  check_rotate_in_grad(grad_out, x, wigner, rows);
  const int64_t A = x.size(0), K = x.size(1), C = x.size(2), E = wigner.size(0), NB = wigner.size(1);
  const int nt = at::get_num_threads();
  auto s = src.contiguous(), d = dst.contiguous();
  checks::check_index_range(s, A, kInBwd, "src", "x.size(0)", nt);
  checks::check_index_range(d, A, kInBwd, "dst", "x.size(0)", nt);
  at::Tensor gx = at::empty({need_x ? A : 0, K, C}, x.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, x.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), xs = x.contiguous();
  const int64_t* idx[2] = {s.data_ptr<int64_t>(), d.data_ptr<int64_t>()};
  if (need_x && gx.numel() > 0) {
    auto ptr = at::empty({2, A + 1}, s.options());
    auto order = at::empty({2, E}, s.options());
    const int64_t* ptrs[2] = {ptr.data_ptr<int64_t>(), ptr.data_ptr<int64_t>() + (A + 1)};
    const int64_t* orders[2] = {order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + E};
    for (int h = 0; h < 2; ++h)
      so2::sort_by_key(idx[h], E, A, const_cast<int64_t*>(ptrs[h]), const_cast<int64_t*>(orders[h]));
    dispatch_float(kInBwd, x.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      so2::rotate_scatter<scalar_t>(g.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptrs, orders, 2, rows.b,
                                    gx.data_ptr<scalar_t>(), A, E, K, C, NB, nt);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    dispatch_float(kInBwd, x.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      so2::wigner_grad<scalar_t>(g.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), idx, 2, rows.b,
                                 gw.data_ptr<scalar_t>(), E, K, C, NB, nt);
    });
  }
  return {gx, gw};
}

// ----------------------------------------------------------------------------- rotate out + scatter
at::Tensor so2_rotate_out_scatter_cpu(const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
                                      int64_t dim_size, const at::Tensor& block_rows, int64_t n_components) {
  Rows rows = check_rotate_out_forward(y, wigner, index, dim_size, block_rows, n_components, kValidate);
  const int64_t E = y.size(0), C = y.size(2), NB = wigner.size(1), K = n_components;
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  checks::check_index_range(idx, dim_size, kOut, "index", "dim_size", nt);
  auto out = at::empty({dim_size, K, C}, y.options());
  if (out.numel() == 0) return out;
  auto ptr = at::empty({dim_size + 1}, idx.options());
  auto order = at::empty({E}, idx.options());
  so2::sort_by_key(idx.data_ptr<int64_t>(), E, dim_size, ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>());
  auto ys = y.contiguous(), w = wigner.contiguous();
  const int64_t* ptrs[1] = {ptr.data_ptr<int64_t>()};
  const int64_t* orders[1] = {order.data_ptr<int64_t>()};
  dispatch_float(kOut, y.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    so2::rotate_scatter<scalar_t>(ys.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptrs, orders, 1, rows.b,
                                  out.data_ptr<scalar_t>(), dim_size, E, K, C, NB, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> so2_rotate_out_scatter_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& wigner, const at::Tensor& index,
    const at::Tensor& block_rows, bool need_y, bool need_wigner) {
  Rows rows = check_rotate_out_backward(grad_out, y, wigner, index, block_rows, kValidate);
  const int64_t E = y.size(0), C = y.size(2), NB = wigner.size(1), N = grad_out.size(0), K = grad_out.size(1);
  const int nt = at::get_num_threads();
  auto idx = index.contiguous();
  checks::check_index_range(idx, N, kOutBwd, "index", "grad_out.size(0)", nt);
  at::Tensor gy = at::empty({need_y ? E : 0, rows.b.R, C}, y.options());
  at::Tensor gw = at::empty({need_wigner ? E : 0, NB}, y.options());
  auto g = grad_out.contiguous(), w = wigner.contiguous(), ys = y.contiguous();
  const int64_t* ip[1] = {idx.data_ptr<int64_t>()};
  if (need_y && gy.numel() > 0) {
    dispatch_float(kOutBwd, y.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      so2::rotate_gather<scalar_t>(g.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ip, 1, rows.b,
                                   gy.data_ptr<scalar_t>(), E, K, C, NB, nt);
    });
  }
  if (need_wigner && gw.numel() > 0) {
    dispatch_float(kOutBwd, y.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
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
