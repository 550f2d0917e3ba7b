// Unit tests of the raw channel-wise TP kernels (csrc/channelwise_tp/cpu/channelwise_tp_kernels.h) against naive
// loops, with random sparse tables (the kernels are table-driven: nothing about ℓ is compiled in),
// channel counts below, at and above the channel block, one and two threads (bitwise equal), every
// subset of requested gradients, and the table checks.
#include <cstdint>
#include <random>
#include <vector>

#include "tests/check.h"
#include "channelwise_tp/cpu/channelwise_tp_kernels.h"
#include "channelwise_tp/tests/tp_case.h"

using namespace nnip_scale;
using namespace nnip_scale::cpu;

template <typename T>
static void check_case(const Case& c, int64_t A, int64_t E, int64_t C, double tol, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  const int64_t N = A + 1;  // one extra output row that receives nothing
  std::vector<T> w(E * c.P * C), x(A * c.I * C), sh(E * c.J), g(N * c.K * C), coeff(c.coeff.begin(), c.coeff.end());
  for (auto& v : w) v = T(val(rng));
  for (auto& v : x) v = T(val(rng));
  for (auto& v : sh) v = T(val(rng));
  for (auto& v : g) v = T(val(rng));
  std::vector<int64_t> snd(E), rcv(E);
  for (auto& v : snd) v = static_cast<int64_t>(rng() % A);
  for (auto& v : rcv) v = static_cast<int64_t>(rng() % A);
  const TPTables t = c.tables();
  NNIP_CHECK(check_tables(t, c.P, c.I, c.J) == nullptr);

  // naive references (double)
  std::vector<double> out_ref(N * c.K * C, 0.0), gw_ref(E * c.P * C, 0.0), gx_ref(A * c.I * C, 0.0),
      gsh_ref(E * c.J, 0.0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t k = 0; k < c.K; ++k)
      for (int64_t q = c.pair_ptr[k]; q < c.pair_ptr[k + 1]; ++q)
        for (int64_t n = c.entry_ptr[q]; n < c.entry_ptr[q + 1]; ++n)
          for (int64_t u = 0; u < C; ++u) {
            const double cw = c.coeff[n] * sh[e * c.J + c.entry_sh[n]];
            const double wv = w[(e * c.P + c.path_of_k[k]) * C + u];
            const double xv = x[(snd[e] * c.I + c.pair_x[q]) * C + u];
            const double gv = g[(rcv[e] * c.K + k) * C + u];
            out_ref[(rcv[e] * c.K + k) * C + u] += cw * wv * xv;
            gw_ref[(e * c.P + c.path_of_k[k]) * C + u] += gv * cw * xv;
            gx_ref[(snd[e] * c.I + c.pair_x[q]) * C + u] += gv * cw * wv;
            gsh_ref[e * c.J + c.entry_sh[n]] += gv * c.coeff[n] * wv * xv;
          }

  std::vector<int64_t> rptr(N + 1), rorder(E), sptr(A + 1), sorder(E);
  sort_by_key(rcv.data(), E, N, rptr.data(), rorder.data());
  sort_by_key(snd.data(), E, A, sptr.data(), sorder.data());
  for (int64_t i = 0; i < N; ++i)  // stable: increasing edge id within a receiver
    for (int64_t s = rptr[i] + 1; s < rptr[i + 1]; ++s) NNIP_CHECK(rorder[s - 1] < rorder[s]);

  std::vector<T> out1(N * c.K * C, T(7)), out2(N * c.K * C, T(7));
  channelwise_tp_forward<T>(w.data(), x.data(), sh.data(), snd.data(), rptr.data(), rorder.data(), t,
                            coeff.data(), out1.data(), N, c.P, c.I, c.J, C, 1);
  channelwise_tp_forward<T>(w.data(), x.data(), sh.data(), snd.data(), rptr.data(), rorder.data(), t,
                            coeff.data(), out2.data(), N, c.P, c.I, c.J, C, 2);
  for (size_t k = 0; k < out1.size(); ++k) {
    NNIP_CHECK_NEAR(out1[k], out_ref[k], tol);
    NNIP_CHECK(out1[k] == out2[k]);  // bitwise, whatever the thread count
  }
  for (int mask = 1; mask < 8; ++mask) {
    const bool nw = mask & 1, nx = mask & 2, nsh = mask & 4;
    std::vector<T> gw(E * c.P * C, T(7)), gx(A * c.I * C, T(7)), gsh(E * c.J, T(7));
    std::vector<T> gw2 = gw, gx2 = gx, gsh2 = gsh;
    for (int nt : {1, 2}) {
      auto& a = nt == 1 ? gw : gw2;
      auto& b = nt == 1 ? gx : gx2;
      auto& d = nt == 1 ? gsh : gsh2;
      channelwise_tp_backward<T>(g.data(), w.data(), x.data(), sh.data(), rcv.data(), sptr.data(),
                                 sorder.data(), t, coeff.data(), nw ? a.data() : nullptr,
                                 nx ? b.data() : nullptr, nsh ? d.data() : nullptr, A, c.P, c.I, c.J, C, nt);
    }
    for (size_t k = 0; k < gw.size(); ++k) {
      NNIP_CHECK(gw[k] == gw2[k]);
      if (nw) NNIP_CHECK_NEAR(gw[k], gw_ref[k], tol);
      else NNIP_CHECK(gw[k] == T(7));  // not requested: untouched
    }
    for (size_t k = 0; k < gx.size(); ++k) {
      NNIP_CHECK(gx[k] == gx2[k]);
      if (nx) NNIP_CHECK_NEAR(gx[k], gx_ref[k], tol);
      else NNIP_CHECK(gx[k] == T(7));
    }
    for (size_t k = 0; k < gsh.size(); ++k) {
      NNIP_CHECK(gsh[k] == gsh2[k]);
      if (nsh) NNIP_CHECK_NEAR(gsh[k], gsh_ref[k], tol);
      else NNIP_CHECK(gsh[k] == T(7));
    }
  }
}

int main() {
  std::mt19937_64 rng(42);
  for (int rep = 0; rep < 3; ++rep) {
    const Case c = random_case(rng);
    for (int64_t C : {1, 5, 8, 16, 37}) {
      check_case<double>(c, 9, 60, C, 1e-12, 100 + rep * 10 + C);
      check_case<float>(c, 9, 60, C, 1e-4, 200 + rep * 10 + C);
    }
    check_case<double>(c, 400, 30000, 3, 1e-11, 7 + rep);  // large enough to run on two threads
    check_case<double>(c, 5, 0, 4, 0.0, 9);                 // no edges: zero output, zero grad_x
  }

  // table checks
  Case c = random_case(rng);
  NNIP_CHECK(check_tables(c.tables(), c.P, c.I, c.J) == nullptr);
  NNIP_CHECK(check_tables(c.tables(), c.P, c.I - 4, c.J) != nullptr);  // x rows out of range
  c.path_of_k[0] = c.P;
  NNIP_CHECK(check_tables(c.tables(), c.P, c.I, c.J) != nullptr);
  std::printf("channel-wise TP kernels: ok\n");
  return 0;
}
