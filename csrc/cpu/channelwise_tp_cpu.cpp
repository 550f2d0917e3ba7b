// CPU kernels of nnip_scale::channelwise_tp_scatter and nnip_scale::channelwise_tp_scatter_backward
// (OpenMP, see channelwise_tp_kernels.h): argument checks naming the op and the argument, dtype
// dispatch (float32, float64), the edge sort, and the call into the raw kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "common/tensor_checks.h"
#include "channelwise_tp_kernels.h"
#include "scatter_kernels.h"

namespace nnip_scale {
namespace {

constexpr const char* kFwd = "nnip_scale::channelwise_tp_scatter";
constexpr const char* kBwd = "nnip_scale::channelwise_tp_scatter_backward";

using checks::check_float;  // csrc/common/tensor_checks.h
using checks::check_long;

void check_index_range(const at::Tensor& idx, int64_t n, const char* op, const char* name,
                       const char* bound, int nt) {
  const int64_t bad = cpu::count_invalid_index(idx.data_ptr<int64_t>(), idx.size(0), n, nt);
  TORCH_CHECK(bad == 0, op, ": ", name, " has ", bad, " entries outside [0, ", bound, "=", n, ")");
}

// Contiguous tables + their consistency check; keeps the contiguous copies alive.
struct Tables {
  at::Tensor path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff;
  cpu::TPTables t;
};

Tables make_tables(const char* op, const at::Tensor& x, const at::Tensor& path_of_k,
                   const at::Tensor& pair_ptr, const at::Tensor& pair_x, const at::Tensor& entry_ptr,
                   const at::Tensor& entry_sh, const at::Tensor& entry_coeff, int64_t P, int64_t J) {
  check_long(path_of_k, op, "path_of_k", x);
  check_long(pair_ptr, op, "pair_ptr", x);
  check_long(pair_x, op, "pair_x", x);
  check_long(entry_ptr, op, "entry_ptr", x);
  check_long(entry_sh, op, "entry_sh", x);
  check_float(entry_coeff, op, "entry_coeff", 1, x);
  const int64_t K = path_of_k.size(0), Q = pair_x.size(0), nnz = entry_sh.size(0);
  TORCH_CHECK(pair_ptr.size(0) == K + 1, op, ": pair_ptr must have len(path_of_k) + 1 = ", K + 1,
              " entries, got ", pair_ptr.size(0));
  TORCH_CHECK(entry_ptr.size(0) == Q + 1, op, ": entry_ptr must have len(pair_x) + 1 = ", Q + 1,
              " entries, got ", entry_ptr.size(0));
  TORCH_CHECK(entry_coeff.size(0) == nnz, op, ": entry_coeff must have len(entry_sh) = ", nnz,
              " entries, got ", entry_coeff.size(0));
  Tables tb{path_of_k.contiguous(), pair_ptr.contiguous(), pair_x.contiguous(),
            entry_ptr.contiguous(), entry_sh.contiguous(), entry_coeff.contiguous(), {}};
  tb.t.K = K;
  tb.t.Q = Q;
  tb.t.nnz = nnz;
  tb.t.path_of_k = tb.path_of_k.data_ptr<int64_t>();
  tb.t.pair_ptr = tb.pair_ptr.data_ptr<int64_t>();
  tb.t.pair_x = tb.pair_x.data_ptr<int64_t>();
  tb.t.entry_ptr = tb.entry_ptr.data_ptr<int64_t>();
  tb.t.entry_sh = tb.entry_sh.data_ptr<int64_t>();
  const char* bad = cpu::check_tables(tb.t, P, x.size(1), J);
  TORCH_CHECK(bad == nullptr, op, ": inconsistent Clebsch–Gordan tables: ", bad ? bad : "");
  return tb;
}

// Shapes shared by the forward and the backward: weights [E, P, C], x [A, I, C], sh [E, J],
// sender/receiver [E].
void check_inputs(const char* op, const at::Tensor& weights, const at::Tensor& x,
                  const at::Tensor& sh, const at::Tensor& sender, const at::Tensor& receiver) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [A, I, C], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  check_float(weights, op, "weights", 3, x);
  check_float(sh, op, "sh", 2, x);
  check_long(sender, op, "sender", x);
  check_long(receiver, op, "receiver", x);
  const int64_t E = sh.size(0);
  TORCH_CHECK(weights.size(0) == E, op, ": weights must have E = sh.size(0) = ", E,
              " rows, got ", weights.size(0));
  TORCH_CHECK(weights.size(2) == x.size(2), op, ": weights must have C = x.size(2) = ", x.size(2),
              " channels, got ", weights.size(2));
  TORCH_CHECK(sender.size(0) == E, op, ": sender must have E = ", E, " entries, got ", sender.size(0));
  TORCH_CHECK(receiver.size(0) == E, op, ": receiver must have E = ", E, " entries, got ",
              receiver.size(0));
}

at::Tensor channelwise_tp_scatter_cpu(const at::Tensor& weights, const at::Tensor& x,
                                      const at::Tensor& sh, const at::Tensor& sender,
                                      const at::Tensor& receiver, int64_t n_atoms,
                                      const at::Tensor& path_of_k, const at::Tensor& pair_ptr,
                                      const at::Tensor& pair_x, const at::Tensor& entry_ptr,
                                      const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
                                      int64_t dense_pairs) {
  check_inputs(kFwd, weights, x, sh, sender, receiver);
  TORCH_CHECK(n_atoms >= 0, kFwd, ": n_atoms must be >= 0, got ", n_atoms);
  (void)dense_pairs;  // FLOP accounting only (see ops.cpp)
  const int64_t E = sh.size(0), P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2);
  const int64_t J = sh.size(1);
  Tables tb = make_tables(kFwd, x, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff, P, J);
  const int nt = at::get_num_threads();
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  check_index_range(snd, A, kFwd, "sender", "x.size(0)", nt);
  check_index_range(rcv, n_atoms, kFwd, "receiver", "n_atoms", nt);
  auto out = at::empty({n_atoms, tb.t.K, C}, x.options());
  if (out.numel() == 0) return out;
  auto ptr = at::empty({n_atoms + 1}, rcv.options());
  auto order = at::empty({E}, rcv.options());
  cpu::sort_by_key(rcv.data_ptr<int64_t>(), E, n_atoms, ptr.data_ptr<int64_t>(),
                   order.data_ptr<int64_t>());
  auto w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_channelwise_tp_scatter_cpu", [&] {
    cpu::channelwise_tp_forward<scalar_t>(
        w.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
        snd.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>(), tb.t,
        tb.entry_coeff.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n_atoms, P, I, J, C, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channelwise_tp_scatter_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& x,
    const at::Tensor& sh, const at::Tensor& sender, const at::Tensor& receiver,
    const at::Tensor& path_of_k, const at::Tensor& pair_ptr, const at::Tensor& pair_x,
    const at::Tensor& entry_ptr, const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
    int64_t dense_pairs, bool need_weights, bool need_x, bool need_sh) {
  check_inputs(kBwd, weights, x, sh, sender, receiver);
  check_float(grad_out, kBwd, "grad_out", 3, x);
  (void)dense_pairs;
  const int64_t E = sh.size(0), P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2);
  const int64_t J = sh.size(1), N = grad_out.size(0);
  Tables tb = make_tables(kBwd, x, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff, P, J);
  TORCH_CHECK(grad_out.size(1) == tb.t.K && grad_out.size(2) == C, kBwd,
              ": grad_out must be [N, K=", tb.t.K, ", C=", C, "], got ", grad_out.sizes());
  const int nt = at::get_num_threads();
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  check_index_range(snd, A, kBwd, "sender", "x.size(0)", nt);
  check_index_range(rcv, N, kBwd, "receiver", "grad_out.size(0)", nt);
  // gradients that are not requested are returned as empty [0] tensors (distinct, never aliased)
  at::Tensor gw = at::empty({need_weights ? E : 0, P, C}, x.options());
  at::Tensor gx = at::empty({need_x ? A : 0, I, C}, x.options());
  at::Tensor gsh = at::empty({need_sh ? E : 0, J}, x.options());
  if ((!need_weights && !need_x && !need_sh) || A == 0 || C == 0) {
    if (need_weights) gw.zero_();
    if (need_x) gx.zero_();
    if (need_sh) gsh.zero_();
    return {gw, gx, gsh};
  }
  auto ptr = at::empty({A + 1}, snd.options());
  auto order = at::empty({E}, snd.options());
  cpu::sort_by_key(snd.data_ptr<int64_t>(), E, A, ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>());
  auto g = grad_out.contiguous(), w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnip_scale_channelwise_tp_scatter_backward_cpu", [&] {
    cpu::channelwise_tp_backward<scalar_t>(
        g.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), xs.data_ptr<scalar_t>(),
        s.data_ptr<scalar_t>(), rcv.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
        order.data_ptr<int64_t>(), tb.t, tb.entry_coeff.data_ptr<scalar_t>(),
        need_weights ? gw.data_ptr<scalar_t>() : nullptr, need_x ? gx.data_ptr<scalar_t>() : nullptr,
        need_sh ? gsh.data_ptr<scalar_t>() : nullptr, A, P, I, J, C, nt);
  });
  return {gw, gx, gsh};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("channelwise_tp_scatter", &channelwise_tp_scatter_cpu);
  m.impl("channelwise_tp_scatter_backward", &channelwise_tp_scatter_backward_cpu);
}

}  // namespace nnip_scale
