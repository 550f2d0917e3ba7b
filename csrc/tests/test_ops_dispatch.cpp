// The registered ops through the dispatcher (libtorch): schema, CPU kernels, errors.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

#include "check.h"

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
  std::printf("ops dispatch: ok\n");
  return 0;
}
