// The registered ops through the dispatcher (libtorch): schema, CPU kernels, errors.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string>

#include "tests/check.h"

static at::Tensor call_scatter(const at::Tensor& src, const at::Tensor& idx, int64_t n) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nnip_scale::scatter_sum", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt)>();
  return op.call(src, idx, c10::SymInt(n));
}

static at::Tensor call_gather(const at::Tensor& x, const at::Tensor& idx) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nnip_scale::gather_rows", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(x, idx);
}

// channelwise_tp_scatter with one path (0e x 0e -> 0e): out[r, 0, u] = sum_e c * sh[e, 0] * w[e, 0, u] * x[s, 0, u]
static at::Tensor call_tp(const at::Tensor& w, const at::Tensor& x, const at::Tensor& sh,
                          const at::Tensor& snd, const at::Tensor& rcv, int64_t n) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nnip_scale::channelwise_tp_scatter", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, c10::SymInt,
                                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t, const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&)>();
  auto L = at::TensorOptions().dtype(at::kLong);
  return op.call(w, x, sh, snd, rcv, c10::SymInt(n), at::zeros({1}, L), at::tensor({0L, 1L}),
                 at::zeros({1}, L), at::tensor({0L, 1L}), at::zeros({1}, L),
                 at::full({1}, 0.5, x.options()), 1, std::nullopt, std::nullopt);
}

int main() {
  at::manual_seed(0);
  for (int64_t F : {1, 16, 256}) {
    auto src = at::randn({2000, F}, at::kDouble);
    auto idx = at::randint(0, 300, {2000}, at::kLong);
    auto ref = at::zeros({400, F}, at::kDouble).index_add_(0, idx, src);
    auto out = call_scatter(src, idx, 400);
    NNIP_CHECK(out.sizes() == ref.sizes());
    NNIP_CHECK(at::allclose(out, ref, 1e-12, 1e-12));
    NNIP_CHECK(at::equal(call_gather(ref, idx), ref.index_select(0, idx)));
  }
  // trailing dims, E = 0
  auto src = at::randn({50, 3, 4}, at::kFloat);
  auto idx = at::randint(0, 7, {50}, at::kLong);
  NNIP_CHECK(at::allclose(call_scatter(src, idx, 7),
                          at::zeros({7, 3, 4}).index_add_(0, idx, src), 1e-5, 1e-5));
  auto empty = call_scatter(at::zeros({0, 5}), at::zeros({0}, at::kLong), 4);
  NNIP_CHECK(empty.sizes() == at::IntArrayRef({4, 5}) && empty.abs().sum().item<float>() == 0.f);
  // out-of-range index is an error naming the op
  bool threw = false;
  try {
    call_scatter(at::ones({2, 1}), at::tensor({0L, 9L}), 3);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("index entries are outside [0, 3)") != std::string::npos;
  }
  NNIP_CHECK(threw);
  // the fused channel-wise TP through the dispatcher: against index_add of the per-edge messages
  {
    auto w = at::randn({40, 1, 3}, at::kDouble), x = at::randn({6, 1, 3}, at::kDouble);
    auto sh = at::randn({40, 1}, at::kDouble);
    auto snd = at::randint(0, 6, {40}, at::kLong), rcv = at::randint(0, 5, {40}, at::kLong);
    rcv[0].fill_(4);  // row 4 < 7 is valid below, outside [0, 4) in the error check
    auto msg = 0.5 * sh.unsqueeze(-1) * w * x.index_select(0, snd);
    auto ref = at::zeros({7, 1, 3}, at::kDouble).index_add_(0, rcv, msg);
    NNIP_CHECK(at::allclose(call_tp(w, x, sh, snd, rcv, 7), ref, 1e-12, 1e-12));
    bool tp_threw = false;
    try {
      call_tp(w, x, sh, snd, rcv, 4);
    } catch (const c10::Error& e) {
      tp_threw = std::string(e.what()).find("channelwise_tp_scatter: receiver has") != std::string::npos;
    }
    NNIP_CHECK(tp_threw);
  }
  std::printf("ops dispatch: ok\n");
  return 0;
}
