// Unit tests of the raw CPU kernels (csrc/scatter/cpu/scatter_kernels.h): all schedules vs a naive loop.
#include <cstdint>
#include <random>
#include <vector>

#include "tests/check.h"
#include "scatter/cpu/scatter_kernels.h"

using nnip_scale::cpu::count_invalid_index;
using nnip_scale::cpu::gather_rows;
using nnip_scale::cpu::scatter_sum_rows;

static void check_scatter(int64_t E, int64_t F, int64_t N, int threads, bool with_scratch) {
  std::mt19937_64 rng(E * 31 + F);
  std::uniform_real_distribution<double> val(-1, 1);
  std::uniform_int_distribution<int64_t> row(0, N > 1 ? N - 2 : 0);  // last row gets nothing
  std::vector<double> src(E * F), out(N * F, 123.0), ref(N * F, 0.0);
  std::vector<int64_t> idx(E);
  for (auto& v : src) v = val(rng);
  for (auto& i : idx) i = row(rng);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t f = 0; f < F; ++f) ref[idx[e] * F + f] += src[e * F + f];
  std::vector<double> scratch(with_scratch ? (threads - 1) * N * F : 0);
  scatter_sum_rows<double>(src.data(), idx.data(), out.data(), E, F, N, threads,
                           with_scratch ? scratch.data() : nullptr);
  for (int64_t k = 0; k < N * F; ++k) NNIP_CHECK_NEAR(out[k], ref[k], 1e-12);
  if (N > 1)
    for (int64_t f = 0; f < F; ++f) NNIP_CHECK(out[(N - 1) * F + f] == 0.0);
}

int main() {
  // serial, row-owner (E < 4N) and edge-parallel (E >= 4N, scratch) schedules; F = 1 and wide
  check_scatter(0, 3, 5, 1, false);
  check_scatter(10, 1, 4, 1, false);
  check_scatter(40000, 1, 30000, 2, false);   // row-owner schedule
  check_scatter(40000, 4, 500, 2, true);      // edge-parallel schedule
  check_scatter(40000, 4, 500, 3, true);
  check_scatter(40000, 4, 500, 2, false);     // no scratch: serial fallback
  check_scatter(3000, 64, 100, 2, true);

  // gather_rows copies rows
  std::vector<float> x = {0, 1, 10, 11, 20, 21};
  std::vector<int64_t> gi = {2, 0, 2};
  std::vector<float> g(6, -1);
  gather_rows<float>(x.data(), gi.data(), g.data(), 3, 2, 2);
  const float expect[] = {20, 21, 0, 1, 20, 21};
  for (int k = 0; k < 6; ++k) NNIP_CHECK(g[k] == expect[k]);

  // index validation
  std::vector<int64_t> bad = {0, -1, 3, 2, 5};
  NNIP_CHECK(count_invalid_index(bad.data(), 5, 3, 2) == 3);
  NNIP_CHECK(count_invalid_index(bad.data(), 1, 3, 2) == 0);
  std::printf("cpu kernels: ok\n");
  return 0;
}
