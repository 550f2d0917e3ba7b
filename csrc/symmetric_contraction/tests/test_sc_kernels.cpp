// Unit tests of the raw symmetric-contraction kernels (csrc/symmetric_contraction/cpu/symmetric_contraction_kernels.h)
// with random tables (a random monomial tree of degree <= 3, with a constant monomial, and random
// sparse rows; the kernels are table-driven: nothing about ℓ is compiled in): the forward against a
// naive evaluation, the backward against the naive weight gradient and central differences of the
// forward, the double backward against central differences of the forward and the backward;
// channel counts below, at and above the channel block; one and two threads bitwise equal; the
// table checks.
#include <cstdint>
#include <random>
#include <vector>

#include "tests/check.h"
#include "symmetric_contraction/cpu/symmetric_contraction_kernels.h"
#include "symmetric_contraction/tests/sc_case.h"

using namespace nnip_scale;
using namespace nnip_scale::cpu;

// out[n, k, u] by direct recursion over the monomial tree
static std::vector<double> naive_forward(const Case& c, const std::vector<double>& x, const std::vector<double>& w,
                                         const std::vector<int64_t>& index, int64_t N, int64_t C) {
  const int64_t Q = static_cast<int64_t>(c.parent.size());
  std::vector<double> out(N * c.K * C, 0.0), mono(Q);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t u = 0; u < C; ++u) {
      for (int64_t q = 0; q < Q; ++q) {
        const double xv = c.var[q] < 0 ? 1.0 : x[(n * c.M + c.var[q]) * C + u];
        mono[q] = (c.parent[q] < 0 ? 1.0 : mono[c.parent[q]]) * xv;
      }
      for (size_t r = 0; r < c.row_out.size(); ++r) {
        double b = 0;
        for (int64_t e = c.row_ptr[r]; e < c.row_ptr[r + 1]; ++e) b += c.coeff[e] * mono[c.entry_mono[e]];
        out[(n * c.K + c.row_out[r]) * C + u] += w[(index[n] * c.Wn + c.row_weight[r]) * C + u] * b;
      }
    }
  return out;
}

static double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

static void check_case(const Case& c, int64_t N, int64_t C, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  const SCTables t = c.tables();
  NNIP_CHECK(check_sc_tables(t, c.M, c.Wn) == nullptr);
  std::vector<double> x(N * c.M * C), w(c.Z * c.Wn * C), g(N * c.K * C), vx(x.size()), vw(w.size());
  std::vector<int64_t> index(N);
  for (auto* v : {&x, &w, &g, &vx, &vw})
    for (auto& e : *v) e = val(rng);
  for (auto& i : index) i = static_cast<int64_t>(rng() % (c.Z - 1));  // element Z-1 has no atoms
  const double* cf = c.coeff.data();

  // forward
  std::vector<double> out(N * c.K * C);
  sc_forward<double>(x.data(), w.data(), index.data(), t, cf, out.data(), N, c.M, c.Wn, C, 2);
  const auto ref = naive_forward(c, x, w, index, N, C);
  for (size_t i = 0; i < out.size(); ++i) NNIP_CHECK_NEAR(out[i], ref[i], 1e-12);

  // backward: grad_x by central differences of <g, F>, grad_w exactly (F is linear in w)
  std::vector<double> gx(x.size()), gw(w.size()), gx1(x.size()), gw1(w.size());
  sc_backward<double>(g.data(), x.data(), w.data(), index.data(), t, cf, gx.data(), gw.data(), N, c.M, c.Z, c.Wn, C, 2);
  sc_backward<double>(g.data(), x.data(), w.data(), index.data(), t, cf, gx1.data(), gw1.data(), N, c.M, c.Z, c.Wn, C, 1);
  NNIP_CHECK(gx == gx1 && gw == gw1);  // bitwise, any thread count
  const double h = 1e-4;
  for (size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (dot(g, naive_forward(c, xp, w, index, N, C)) - dot(g, naive_forward(c, xm, w, index, N, C))) / (2 * h);
    NNIP_CHECK_NEAR(gx[i], fd, 1e-6);
  }
  for (size_t i = 0; i < w.size(); ++i) {
    auto e = std::vector<double>(w.size(), 0.0);
    e[i] = 1.0;
    NNIP_CHECK_NEAR(gw[i], dot(g, naive_forward(c, x, e, index, N, C)), 1e-10);
  }
  // only one gradient requested
  std::vector<double> gx2(x.size()), gw2(w.size());
  sc_backward<double>(g.data(), x.data(), w.data(), index.data(), t, cf, gx2.data(), nullptr, N, c.M, c.Z, c.Wn, C, 2);
  sc_backward<double>(g.data(), x.data(), w.data(), index.data(), t, cf, nullptr, gw2.data(), N, c.M, c.Z, c.Wn, C, 2);
  NNIP_CHECK(gx2 == gx && gw2 == gw);

  // double backward: d_g = JVP of F along (vx, vw); (d_x, d_w) = gradient of <vx, B_x> + <vw, B_w>
  std::vector<double> dg(g.size()), dx(x.size()), dw(w.size()), dg1(g.size()), dx1(x.size()), dw1(w.size());
  sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), vx.data(), vw.data(), t, cf, dg.data(), dx.data(),
                             dw.data(), N, c.M, c.Z, c.Wn, C, 2);
  sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), vx.data(), vw.data(), t, cf, dg1.data(),
                             dx1.data(), dw1.data(), N, c.M, c.Z, c.Wn, C, 1);
  NNIP_CHECK(dg == dg1 && dx == dx1 && dw == dw1);
  {
    auto xp = x, xm = x, wp = w, wm = w;
    for (size_t i = 0; i < x.size(); ++i) {
      xp[i] += h * vx[i];
      xm[i] -= h * vx[i];
    }
    for (size_t i = 0; i < w.size(); ++i) {
      wp[i] += h * vw[i];
      wm[i] -= h * vw[i];
    }
    const auto fp = naive_forward(c, xp, wp, index, N, C), fm = naive_forward(c, xm, wm, index, N, C);
    for (size_t i = 0; i < dg.size(); ++i) NNIP_CHECK_NEAR(dg[i], (fp[i] - fm[i]) / (2 * h), 1e-6);
  }
  auto pairing = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
    std::vector<double> bx(x.size()), bw(w.size());
    sc_backward<double>(g.data(), xx.data(), ww.data(), index.data(), t, cf, bx.data(), bw.data(), N, c.M, c.Z, c.Wn, C, 1);
    return dot(vx, bx) + dot(vw, bw);
  };
  for (size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    NNIP_CHECK_NEAR(dx[i], (pairing(xp, w) - pairing(xm, w)) / (2 * h), 1e-6);
  }
  for (size_t i = 0; i < w.size(); ++i) {
    auto wp = w, wm = w;
    wp[i] += h;
    wm[i] -= h;
    NNIP_CHECK_NEAR(dw[i], (pairing(x, wp) - pairing(x, wm)) / (2 * h), 1e-6);
  }
  // absent tangents are zeros
  std::vector<double> zx(x.size(), 0.0), dgb(g.size()), dxb(x.size()), dgc(g.size()), dxc(x.size());
  sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), nullptr, vw.data(), t, cf, dgb.data(),
                             dxb.data(), nullptr, N, c.M, c.Z, c.Wn, C, 2);
  sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), zx.data(), vw.data(), t, cf, dgc.data(),
                             dxc.data(), nullptr, N, c.M, c.Z, c.Wn, C, 2);
  for (size_t i = 0; i < dgb.size(); ++i) NNIP_CHECK_NEAR(dgb[i], dgc[i], 1e-14);
  for (size_t i = 0; i < dxb.size(); ++i) NNIP_CHECK_NEAR(dxb[i], dxc[i], 1e-14);
}

int main() {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 3; ++trial) {
    const Case c = random_case(rng);
    for (int64_t C : {1, 3, 8, 13}) check_case(c, 5, C, 100 * trial + C);
  }
  // table checks
  Case c = random_case(rng);
  c.parent[3] = 7;  // a parent after its child
  NNIP_CHECK(check_sc_tables(c.tables(), c.M, c.Wn) != nullptr);
  c = random_case(rng);
  c.entry_mono[0] = 1000;
  NNIP_CHECK(check_sc_tables(c.tables(), c.M, c.Wn) != nullptr);
  c = random_case(rng);
  c.row_weight[0] = c.Wn;
  NNIP_CHECK(check_sc_tables(c.tables(), c.M, c.Wn) != nullptr);
  std::printf("symmetric contraction kernels: ok\n");
  return 0;
}
