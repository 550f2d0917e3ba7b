// Argument checks, table pointers and output allocation shared by the CPU and CUDA glue of
// nnip_scale::channelwise_tp_scatter and its backward (step "checks" of csrc/common/kernels.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "channelwise_tp/tables.h"
#include "common/tensor_checks.h"

namespace nnip_scale {
namespace tp_glue {

constexpr const char* kFwd = "nnip_scale::channelwise_tp_scatter";
constexpr const char* kBwd = "nnip_scale::channelwise_tp_scatter_backward";

// The Clebsch–Gordan tables of one call: raw pointers into contiguous copies that live as long as this.
struct Tables {
  checks::Pinned pins;
  at::Tensor entry_coeff;  // contiguous, the dtype of x
  TPTables t;
};

// Checks the table tensors (dtype, device, lengths) and points the returned tables at them. With `validate` (CPU:
// the tables are host memory) also their values against P paths, x's rows and J harmonics; the CUDA
// glue cannot without a device-to-host copy.
inline Tables make_tables(const char* op, const at::Tensor& x, const at::Tensor& path_of_k,
                          const at::Tensor& pair_ptr, const at::Tensor& pair_x, const at::Tensor& entry_ptr,
                          const at::Tensor& entry_sh, const at::Tensor& entry_coeff, int64_t P, int64_t J,
                          bool validate) {
  using namespace checks;
  check_long(path_of_k, op, "path_of_k", x);
  check_long(pair_ptr, op, "pair_ptr", x);
  check_long(pair_x, op, "pair_x", x);
  check_long(entry_ptr, op, "entry_ptr", x);
  check_long(entry_sh, op, "entry_sh", x);
  check_float(entry_coeff, op, "entry_coeff", 1, x);
  const int64_t K = path_of_k.size(0), Q = pair_x.size(0), nnz = entry_sh.size(0);
  check_len(pair_ptr, K + 1, op, "pair_ptr", "len(path_of_k) + 1");
  check_len(entry_ptr, Q + 1, op, "entry_ptr", "len(pair_x) + 1");
  check_len(entry_coeff, nnz, op, "entry_coeff", "len(entry_sh)");
  Tables tb;
  tb.t.K = K;
  tb.t.Q = Q;
  tb.t.nnz = nnz;
  tb.t.path_of_k = tb.pins.ptr<int64_t>(path_of_k);
  tb.t.pair_ptr = tb.pins.ptr<int64_t>(pair_ptr);
  tb.t.pair_x = tb.pins.ptr<int64_t>(pair_x);
  tb.t.entry_ptr = tb.pins.ptr<int64_t>(entry_ptr);
  tb.t.entry_sh = tb.pins.ptr<int64_t>(entry_sh);
  tb.entry_coeff = entry_coeff.contiguous();
  if (validate) {
    const char* bad = check_tables(tb.t, P, x.size(1), J);
    TORCH_CHECK(bad == nullptr, op, ": inconsistent Clebsch–Gordan tables: ", bad ? bad : "");
  }
  return tb;
}

// Shapes shared by the forward and the backward: weights [E, P, C], x [A, I, C], sh [E, J],
// sender/receiver int64 [E].
inline void check_inputs(const char* op, const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
                         const at::Tensor& sender, const at::Tensor& receiver) {
  using namespace checks;
  check_features(x, op, "[A, I, C]");
  check_float(weights, op, "weights", 3, x);
  check_float(sh, op, "sh", 2, x);
  check_long(sender, op, "sender", x);
  check_long(receiver, op, "receiver", x);
  const int64_t E = sh.size(0);
  TORCH_CHECK(weights.size(0) == E, op, ": weights must have E = sh.size(0) = ", E, " rows, got ", weights.size(0));
  TORCH_CHECK(weights.size(2) == x.size(2), op, ": weights must have C = x.size(2) = ", x.size(2),
              " channels, got ", weights.size(2));
  check_len(sender, E, op, "sender", "E");
  check_len(receiver, E, op, "receiver", "E");
}

// The backward's grad_out [N, K, C].
inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& x, int64_t K) {
  checks::check_float(grad_out, kBwd, "grad_out", 3, x);
  TORCH_CHECK(grad_out.size(1) == K && grad_out.size(2) == x.size(2), kBwd, ": grad_out must be [N, K=", K,
              ", C=", x.size(2), "], got ", grad_out.sizes());
}

// All checks of the forward that need no host copy of device data, and its tables (validated with
// `validate`: CPU).
inline Tables check_forward(const at::Tensor& weights, const at::Tensor& x, const at::Tensor& sh,
                            const at::Tensor& sender, const at::Tensor& receiver, int64_t n_atoms,
                            const at::Tensor& path_of_k, const at::Tensor& pair_ptr, const at::Tensor& pair_x,
                            const at::Tensor& entry_ptr, const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
                            bool validate) {
  check_inputs(kFwd, weights, x, sh, sender, receiver);
  TORCH_CHECK(n_atoms >= 0, kFwd, ": n_atoms must be >= 0, got ", n_atoms);
  return make_tables(kFwd, x, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff, weights.size(1),
                     sh.size(1), validate);
}

// The same for the backward (with grad_out [N, K, C]).
inline Tables check_backward(const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& x,
                             const at::Tensor& sh, const at::Tensor& sender, const at::Tensor& receiver,
                             const at::Tensor& path_of_k, const at::Tensor& pair_ptr, const at::Tensor& pair_x,
                             const at::Tensor& entry_ptr, const at::Tensor& entry_sh, const at::Tensor& entry_coeff,
                             bool validate) {
  check_inputs(kBwd, weights, x, sh, sender, receiver);
  Tables tb = make_tables(kBwd, x, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff, weights.size(1),
                          sh.size(1), validate);
  check_grad_out(grad_out, x, tb.t.K);
  return tb;
}

// The optional edge layout of a receiver-sorted batch (nnip_scale.data.batching.edge_layout): receiver_ptr
// int64 [n_receivers + 1], the segment offsets of the sorted receivers; sender_order int64 [E], the edges'
// stable order by sender. Shapes here; values by the CPU glue (one pass each), trusted by the CUDA glue.
inline void check_layout(const char* op, const at::Tensor& x, int64_t E, int64_t n_receivers,
                         const std::optional<at::Tensor>& receiver_ptr, const std::optional<at::Tensor>& sender_order) {
  if (receiver_ptr.has_value()) {
    checks::check_long(*receiver_ptr, op, "receiver_ptr", x);
    checks::check_len(*receiver_ptr, n_receivers + 1, op, "receiver_ptr", "n_atoms + 1");
  }
  if (sender_order.has_value()) {
    checks::check_long(*sender_order, op, "sender_order", x);
    checks::check_len(*sender_order, E, op, "sender_order", "E");
  }
}

// The backward's outputs (grad_weights [E, P, C], grad_x [A, I, C], grad_sh [E, J]); a gradient that is
// not requested is an empty [0, ...] tensor (distinct, never aliased).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> alloc_grads(const at::Tensor& weights, const at::Tensor& x,
                                                                 const at::Tensor& sh, bool need_weights,
                                                                 bool need_x, bool need_sh) {
  const int64_t E = sh.size(0), C = x.size(2);
  return {at::empty({need_weights ? E : 0, weights.size(1), C}, x.options()),
          at::empty({need_x ? x.size(0) : 0, x.size(1), C}, x.options()),
          at::empty({need_sh ? E : 0, sh.size(1)}, x.options())};
}

}  // namespace tp_glue
}  // namespace nnip_scale
