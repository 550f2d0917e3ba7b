// Unit tests of the raw eSEN rotation kernels (csrc/so2/cpu/so2_kernels.h) against naive loops over
// dense block-diagonal rows: ℓmax 1..6, mmax 0..ℓmax (rows in the m-major layout, entries grouped by
// degree as so2_block_rows builds them), channel counts below, at and above the channel block, S = 1
// and 2 endpoint halves, atoms without edges, one and two threads (bitwise equal), the adjoint
// identities between the three kernels, and the table checks.
#include <cstdint>
#include <random>
#include <vector>

#include "so2/cpu/so2_kernels.h"
#include "so2/tests/so2_case.h"
#include "tests/check.h"

using namespace nnip_scale::so2;

using so2_case::block_rows;

template <typename T>
static void check_case(int64_t lmax, int64_t mmax, int64_t C, int S, double tol, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  int64_t NB = 0;
  const std::vector<int64_t> rows = block_rows(lmax, mmax, &NB);
  BlockRows b;
  b.R = static_cast<int64_t>(rows.size() / 2);
  b.rows = rows.data();
  const int64_t K = (lmax + 1) * (lmax + 1), R = b.R, A = 6, E = 23, SC = S * C;
  NNIP_CHECK(check_rows(b, NB, K) == nullptr);
  std::vector<T> x(A * K * C), w(E * NB), y(E * R * SC);
  for (auto& v : x) v = T(val(rng));
  for (auto& v : w) v = T(val(rng));
  for (auto& v : y) v = T(val(rng));
  std::vector<std::vector<int64_t>> idx(S, std::vector<int64_t>(E));
  for (int s = 0; s < S; ++s)
    for (auto& v : idx[s]) v = static_cast<int64_t>(rng() % (A - 1));  // atom A-1: no edges
  const int64_t* ip[2] = {idx[0].data(), S > 1 ? idx[1].data() : nullptr};
  // dense D_e [R, K]
  auto D = [&](int64_t e, int64_t r, int64_t k) -> double {
    const int64_t l = b.ell(r);
    if (k < l * l || k >= (l + 1) * (l + 1)) return 0.0;
    return double(w[e * NB + b.off(r) + (k - l * l)]);
  };
  // gather
  std::vector<T> out(E * R * SC), out1(E * R * SC);
  rotate_gather<T>(x.data(), w.data(), ip, S, b, out.data(), E, K, C, NB, 2);
  rotate_gather<T>(x.data(), w.data(), ip, S, b, out1.data(), E, K, C, NB, 1);
  for (int64_t e = 0; e < E; ++e)
    for (int s = 0; s < S; ++s)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) {
          double ref = 0;
          for (int64_t k = 0; k < K; ++k) ref += D(e, r, k) * double(x[(idx[s][e] * K + k) * C + c]);
          NNIP_CHECK_NEAR(out[(e * R + r) * SC + s * C + c], ref, tol);
        }
  for (size_t i = 0; i < out.size(); ++i) NNIP_CHECK(out[i] == out1[i]);
  // scatter
  std::vector<std::vector<int64_t>> ptr(S, std::vector<int64_t>(A + 1)), order(S, std::vector<int64_t>(E));
  for (int s = 0; s < S; ++s) sort_by_key(idx[s].data(), E, A, ptr[s].data(), order[s].data());
  const int64_t* pp[2] = {ptr[0].data(), S > 1 ? ptr[1].data() : nullptr};
  const int64_t* op[2] = {order[0].data(), S > 1 ? order[1].data() : nullptr};
  std::vector<T> sc(A * K * C, T(7)), sc1(A * K * C);  // written entirely (the 7s must go)
  rotate_scatter<T>(y.data(), w.data(), pp, op, S, b, sc.data(), A, E, K, C, NB, 2);
  rotate_scatter<T>(y.data(), w.data(), pp, op, S, b, sc1.data(), A, E, K, C, NB, 1);
  for (int64_t a = 0; a < A; ++a)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        double ref = 0;
        for (int s = 0; s < S; ++s)
          for (int64_t e = 0; e < E; ++e)
            if (idx[s][e] == a)
              for (int64_t r = 0; r < R; ++r) ref += D(e, r, k) * double(y[(e * R + r) * SC + s * C + c]);
        NNIP_CHECK_NEAR(sc[(a * K + k) * C + c], ref, tol);
        if (a == A - 1) NNIP_CHECK(sc[(a * K + k) * C + c] == T(0));
      }
  for (size_t i = 0; i < sc.size(); ++i) NNIP_CHECK(sc[i] == sc1[i]);
  // Wigner gradient: <gw, dw> = <y, gather(x; dw)> for any dw (checked with the unit vectors)
  std::vector<T> gw(E * NB, T(5)), gw1(E * NB);
  wigner_grad<T>(y.data(), x.data(), ip, S, b, gw.data(), E, K, C, NB, 2);
  wigner_grad<T>(y.data(), x.data(), ip, S, b, gw1.data(), E, K, C, NB, 1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t l = b.ell(r);
      for (int64_t j = 0; j < 2 * l + 1; ++j) {
        double ref = 0;
        for (int s = 0; s < S; ++s)
          for (int64_t c = 0; c < C; ++c)
            ref += double(y[(e * R + r) * SC + s * C + c]) * double(x[(idx[s][e] * K + l * l + j) * C + c]);
        NNIP_CHECK_NEAR(gw[e * NB + b.off(r) + j], ref, tol);
      }
    }
  for (size_t i = 0; i < gw.size(); ++i) NNIP_CHECK(gw[i] == gw1[i]);
  // adjoint: <gather(x), y> = <x, scatter(y)>
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < out.size(); ++i) lhs += double(out[i]) * double(y[i]);
  for (size_t i = 0; i < sc.size(); ++i) rhs += double(x[i]) * double(sc[i]);
  NNIP_CHECK_NEAR(lhs, rhs, tol * (1 + std::fabs(lhs)) * 10);
}

int main() {
  uint64_t seed = 1;
  for (int64_t lmax = 1; lmax <= 6; ++lmax)
    for (int64_t mmax = 0; mmax <= lmax; ++mmax)
      for (int64_t C : {1, 7, 8, 17}) {
        check_case<double>(lmax, mmax, C, 2, 1e-11, seed++);
        check_case<double>(lmax, mmax, C, 1, 1e-11, seed++);
      }
  for (int64_t C : {3, 16, 33}) check_case<float>(4, 2, C, 2, 2e-4, seed++);
  // table checks
  int64_t NB = 0;
  std::vector<int64_t> rows = block_rows(2, 1, &NB);
  BlockRows b;
  b.R = static_cast<int64_t>(rows.size() / 2);
  b.rows = rows.data();
  NNIP_CHECK(check_rows(b, NB, 9) == nullptr);
  NNIP_CHECK(check_rows(b, NB - 1, 9) != nullptr);  // the last block does not fit
  NNIP_CHECK(check_rows(b, NB, 4) != nullptr);      // degree 2 needs 9 components
  rows[0] = -1;
  NNIP_CHECK(check_rows(b, NB, 9) != nullptr);
  // no edges: the scatter writes zeros, the gather and the Wigner gradient write nothing
  {
    std::vector<double> x(2 * 9 * 3, 1.0), out(2 * 9 * 3, 4.0);
    std::vector<int64_t> ptr(3, 0);
    rows = block_rows(2, 1, &NB);
    b.rows = rows.data();
    const int64_t* pp[1] = {ptr.data()};
    const int64_t* op[1] = {nullptr};
    rotate_scatter<double>(nullptr, nullptr, pp, op, 1, b, out.data(), 2, 0, 9, 3, NB, 2);
    for (double v : out) NNIP_CHECK(v == 0.0);
  }
  std::printf("so2 kernels: ok\n");
  return 0;
}
