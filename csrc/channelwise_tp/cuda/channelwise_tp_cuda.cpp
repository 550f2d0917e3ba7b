// Torch glue of the CUDA channel-wise TP kernels (compiled only in the CUDA build of setup.py): checks
// (channelwise_tp/glue.h, the same as on CPU) -> the edges grouped by receiver (forward) or sender
// (backward) with a stable device sort and a searchsorted, no host sync (or, given the batch's edge layout,
// receiver_ptr as is and sender_order with one searchsorted: no sort) -> dtype dispatch -> launch.
// As the other CUDA ops it does not range-check the edge indices or validate the table values (that
// would need a device-to-host copy): see channelwise_tp/cuda/channelwise_tp_kernels.h for what the
// kernels do with out-of-range edges; the CPU path rejects both with an error.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "channelwise_tp/cuda/channelwise_tp_kernels.h"
#include "channelwise_tp/glue.h"
#include "common/cuda_glue.h"
#include "common/dispatch.h"

namespace nnip_scale {
namespace {

using namespace tp_glue;
using checks::check_launch;

constexpr const char* kLaunchHint =
    " (cudaErrorInvalidValue: the Clebsch–Gordan tables have too many pairs for the shared-memory layout)";

at::Tensor channelwise_tp_scatter_cuda(const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
                                       const at::Tensor& sender, const at::Tensor& receiver, int64_t n_atoms,
                                       const at::Tensor& path_of_k, const at::Tensor& pair_ptr,
                                       const at::Tensor& pair_x, const at::Tensor& entry_ptr,
                                       const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
                                       int64_t dense_pairs, const std::optional<at::Tensor>& receiver_ptr,
                                       const std::optional<at::Tensor>& sender_order) {
  const Tables tb = check_forward(weights, x, sh, sender, receiver, n_atoms, path_of_k, pair_ptr, pair_x, entry_ptr,
                                  entry_sh, entry_coeff, false);
  check_layout(kFwd, x, sh.size(0), n_atoms, receiver_ptr, sender_order);
  (void)dense_pairs;  // FLOP accounting only (see channelwise_tp/schema.cpp)
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2), J = sh.size(1);
  auto out = at::empty({n_atoms, tb.t.K, C}, x.options());
  if (out.numel() == 0) return out;
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  at::Tensor ptr, order;  // order undefined: the edges are sorted by receiver (the batch's receiver_ptr, trusted)
  if (receiver_ptr.has_value()) {
    ptr = receiver_ptr->contiguous();
  } else {
    std::tie(ptr, order) = group_by_key(rcv, n_atoms);
  }
  auto w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kFwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::tp_forward<T>(w.data_ptr<T>(), xs.data_ptr<T>(), s.data_ptr<T>(), snd.data_ptr<int64_t>(),
                                     ptr.data_ptr<int64_t>(), order.defined() ? order.data_ptr<int64_t>() : nullptr,
                                     tb.t,
                                     tb.entry_coeff.data_ptr<T>(), out.data_ptr<T>(), n_atoms, A, P, I, J, C, stream),
                 kFwd, kLaunchHint);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channelwise_tp_scatter_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
    const at::Tensor& sender, const at::Tensor& receiver, const at::Tensor& path_of_k, const at::Tensor& pair_ptr,
    const at::Tensor& pair_x, const at::Tensor& entry_ptr, const at::Tensor& entry_sh,
    const at::Tensor& entry_coeff, int64_t dense_pairs, bool need_weights, bool need_x, bool need_sh,
    const std::optional<at::Tensor>& receiver_ptr, const std::optional<at::Tensor>& sender_order) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t E = sh.size(0), P = weights.size(1), A = x.size(0), I = x.size(1), C = x.size(2), J = sh.size(1);
  const Tables tb = check_backward(grad_out, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr,
                                   entry_sh, entry_coeff, false);
  (void)dense_pairs;
  const int64_t N = grad_out.size(0);
  check_layout(kBwd, x, E, N, receiver_ptr, sender_order);
  at::Tensor gw, gx, gsh;
  std::tie(gw, gx, gsh) = alloc_grads(weights, x, sh, need_weights, need_x, need_sh);
  gw.zero_();  // the kernels add into grad_w, and never visit edges whose sender is out of range
  if ((!need_weights && !need_x && !need_sh) || A == 0 || C == 0) {
    gx.zero_();
    gsh.zero_();
    return {gw, gx, gsh};
  }
  auto snd = sender.contiguous(), rcv = receiver.contiguous();
  at::Tensor ptr, order;
  if ((need_weights || need_x) && sender_order.has_value()) {
    // the batch's permutation to sender order (trusted): its segments by a gather and a searchsorted, no sort
    order = sender_order->contiguous();
    ptr = at::searchsorted(snd.index_select(0, order), at::arange(A + 1, snd.options()));
  } else if (need_weights || need_x) {
    std::tie(ptr, order) = group_by_key(snd, A);
  }
  auto g = grad_out.contiguous(), w = weights.contiguous(), xs = x.contiguous(), s = sh.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  dispatch_float(kBwd, x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::tp_backward<T>(g.data_ptr<T>(), w.data_ptr<T>(), xs.data_ptr<T>(), s.data_ptr<T>(),
                                      snd.data_ptr<int64_t>(), rcv.data_ptr<int64_t>(),
                                      ptr.defined() ? ptr.data_ptr<int64_t>() : nullptr,
                                      order.defined() ? order.data_ptr<int64_t>() : nullptr, tb.t,
                                      tb.entry_coeff.data_ptr<T>(), need_weights ? gw.data_ptr<T>() : nullptr,
                                      need_x ? gx.data_ptr<T>() : nullptr, need_sh ? gsh.data_ptr<T>() : nullptr, E, N,
                                      A, P, I, J, C, stream),
                 kBwd, kLaunchHint);
  });
  return {gw, gx, gsh};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnip_scale, CUDA, m) {
  m.impl("channelwise_tp_scatter", &channelwise_tp_scatter_cuda);
  m.impl("channelwise_tp_scatter_backward", &channelwise_tp_scatter_backward_cuda);
}

}  // namespace nnip_scale
