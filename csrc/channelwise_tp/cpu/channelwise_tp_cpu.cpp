// CPU kernels of nnip_scale::channelwise_tp_scatter and nnip_scale::channelwise_tp_scatter_backward
// (OpenMP, see channelwise_tp_kernels.h): checks (channelwise_tp/glue.h, plus the index ranges and the
// table values, which the CPU can afford) -> the edge sort -> dtype dispatch -> kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "channelwise_tp/cpu/channelwise_tp_kernels.h"
#include "channelwise_tp/glue.h"
#include "common/dispatch.h"

namespace nnip_scale {
namespace {

using namespace tp_glue;
using checks::check_index_range;

// Stable counting sort of the edges by `key` (values in [0, n)): (ptr [n + 1], order [E]).
std::tuple<at::Tensor, at::Tensor> sort_edges(const at::Tensor& key, int64_t n) {
  auto ptr = at::empty({n + 1}, key.options());
  auto order = at::empty({key.size(0)}, key.options());
  cpu::sort_by_key(key.data_ptr<int64_t>(), key.size(0), n, ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>());
  return {ptr, order};
}

at::Tensor channelwise_tp_scatter_cpu(const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
                                      const at::Tensor& sender, const at::Tensor& receiver, int64_t n_atoms,
                                      const at::Tensor& path_of_k, const at::Tensor& pair_ptr,
                                      const at::Tensor& pair_x, const at::Tensor& entry_ptr,
                                      const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
                                      int64_t dense_pairs, const std::optional<at::Tensor>& receiver_ptr,
                                      const std::optional<at::Tensor>& sender_order) {
  const Tables tb = check_forward(weights, x, sh, sender, receiver, n_atoms, path_of_k, pair_ptr, pair_x, entry_ptr,
                                  entry_sh, entry_coeff, true);
  check_layout(kFwd, x, sh.size(0), n_atoms, receiver_ptr, sender_order);
  (void)dense_pairs;  // FLOP accounting only (see channelwise_tp/schema.cpp)
  const int64_t P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2), J = sh.size(1);
  const int64_t E = sh.size(0);
  const int nt = at::get_num_threads();
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  check_index_range(snd, A, kFwd, "sender", "x.size(0)", nt);
  // Edges sorted by receiver (the collate sorts them): one pass gives the segments, no sort. Otherwise the
  // range check's message comes first, then a stable counting sort.
  auto ptr = at::empty({n_atoms + 1}, rcv.options());
  at::Tensor order;  // undefined: the edges in their own order
  const int64_t unsorted = cpu::segments_of_grouped(rcv.data_ptr<int64_t>(), nullptr, E, n_atoms, ptr.data_ptr<int64_t>());
  if (unsorted >= 0) {
    check_index_range(rcv, n_atoms, kFwd, "receiver", "n_atoms", nt);
    const int64_t* r = rcv.data_ptr<int64_t>();
    TORCH_CHECK(!receiver_ptr.has_value(), kFwd, ": receiver_ptr was given, so the edges must be sorted by receiver ",
                "(ascending, as nnip_scale.data.batching.build_batch sorts them), but receiver[", unsorted, "] = ",
                r[unsorted], " < receiver[", unsorted - 1, "] = ", r[unsorted - 1]);
    std::tie(ptr, order) = sort_edges(rcv, n_atoms);
  } else if (receiver_ptr.has_value()) {
    TORCH_CHECK(at::equal(ptr, receiver_ptr->contiguous()), kFwd, ": receiver_ptr is not the segment offsets of the ",
                "sorted receivers; expected searchsorted(receiver, arange(n_atoms + 1)) (nnip_scale.data.batching.",
                "edge_layout)");
  }
  auto out = at::empty({n_atoms, tb.t.K, C}, x.options());
  if (out.numel() == 0) return out;
  auto w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  dispatch_float(kFwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::channelwise_tp_forward<T>(w.data_ptr<T>(), xs.data_ptr<T>(), s.data_ptr<T>(), snd.data_ptr<int64_t>(),
                                   ptr.data_ptr<int64_t>(),
                                   order.defined() ? order.data_ptr<int64_t>() : nullptr, tb.t,
                                   tb.entry_coeff.data_ptr<T>(), out.data_ptr<T>(), n_atoms, P, I, J, C, nt);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channelwise_tp_scatter_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
    const at::Tensor& sender, const at::Tensor& receiver, const at::Tensor& path_of_k, const at::Tensor& pair_ptr,
    const at::Tensor& pair_x, const at::Tensor& entry_ptr, const at::Tensor& entry_sh,
    const at::Tensor& entry_coeff, int64_t dense_pairs, bool need_weights, bool need_x, bool need_sh,
    const std::optional<at::Tensor>& receiver_ptr, const std::optional<at::Tensor>& sender_order) {
  const int64_t P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2), J = sh.size(1);
  const Tables tb = check_backward(grad_out, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr,
                                   entry_sh, entry_coeff, true);
  (void)dense_pairs;
  const int64_t N = grad_out.size(0), E = sh.size(0);
  check_layout(kBwd, x, E, N, receiver_ptr, sender_order);
  const int nt = at::get_num_threads();
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  check_index_range(snd, A, kBwd, "sender", "x.size(0)", nt);
  check_index_range(rcv, N, kBwd, "receiver", "grad_out.size(0)", nt);
  at::Tensor gw, gx, gsh;
  std::tie(gw, gx, gsh) = alloc_grads(weights, x, sh, need_weights, need_x, need_sh);
  if ((!need_weights && !need_x && !need_sh) || A == 0 || C == 0) {
    for (auto* t : {&gw, &gx, &gsh}) t->zero_();
    return {gw, gx, gsh};
  }
  at::Tensor ptr, order;
  if (sender_order.has_value()) {  // the collate's permutation to sender order: checked in one pass, no sort
    order = sender_order->contiguous();
    ptr = at::empty({A + 1}, snd.options());
    const int64_t bad =
        cpu::segments_of_grouped(snd.data_ptr<int64_t>(), order.data_ptr<int64_t>(), E, A, ptr.data_ptr<int64_t>());
    TORCH_CHECK(bad < 0, kBwd, ": sender_order is not the edges' stable order by sender (first wrong at position ", bad,
                "); expected a permutation of [0, E) listing the edges by ascending sender, increasing edge id ",
                "within a sender: torch.argsort(sender, stable=True), as nnip_scale.data.batching.build_batch stores it");
  } else {
    std::tie(ptr, order) = sort_edges(snd, A);
  }
  auto g = grad_out.contiguous(), w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  dispatch_float(kBwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::channelwise_tp_backward<T>(g.data_ptr<T>(), w.data_ptr<T>(), xs.data_ptr<T>(), s.data_ptr<T>(),
                                    rcv.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
                                    tb.t, tb.entry_coeff.data_ptr<T>(), need_weights ? gw.data_ptr<T>() : nullptr,
                                    need_x ? gx.data_ptr<T>() : nullptr, need_sh ? gsh.data_ptr<T>() : nullptr, A,
                                    P, I, J, C, nt);
  });
  return {gw, gx, gsh};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CPU, m) {
  m.impl("channelwise_tp_scatter", &channelwise_tp_scatter_cpu);
  m.impl("channelwise_tp_scatter_backward", &channelwise_tp_scatter_backward_cpu);
}

}  // namespace nnip_scale
