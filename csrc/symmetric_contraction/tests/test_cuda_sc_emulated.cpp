// The CUDA kernels of the symmetric contraction (symmetric_contraction/cuda/symmetric_contraction_kernels.cu)
// run on the host against the CPU kernels (csrc/tests/emulation/cuda_emulation.h: one host thread per CUDA
// thread, blocks in turn): checks the device code's math and indexing on machines without a GPU. Launches
// use few blocks, so the grid-stride loops wrap.
#include "tests/emulation/cuda_emulation.h"
// (the emulation header first: the .cu below is compiled as host code)
#include "symmetric_contraction/cuda/symmetric_contraction_kernels.cu"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "symmetric_contraction/cpu/symmetric_contraction_kernels.h"
#include "symmetric_contraction/tests/sc_case.h"
#include "tests/check.h"

using namespace nnip_scale;

template <typename F>
static void launch(int64_t total, unsigned threads, F kernel) {
  emulate_grid_stride(total, threads, kernel);
}

static void run_case(int64_t N, int64_t C, unsigned threads, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  const int64_t M = 5, K = 4, Wn = 6, Z = 3;
  const Case c = random_case(rng, M, K, Wn, Z, 7, 12, /*rows_by_output=*/false, /*empty_row=*/-1);
  const auto& parent = c.parent;
  const auto& var = c.var;
  const auto& entry_mono = c.entry_mono;
  const auto& row_out = c.row_out;
  const auto& coeff = c.coeff;
  const SCTables th = c.tables(), td = th;
  NNIP_CHECK(check_sc_tables(th, M, Wn) == nullptr);

  std::vector<double> x(N * M * C), w(Z * Wn * C), g(N * K * C), vx(x.size()), vw(w.size());
  for (auto* v : {&x, &w, &g, &vx, &vw})
    for (auto& e : *v) e = val(rng);
  std::vector<int64_t> index(N);
  for (auto& i : index) i = static_cast<int64_t>(rng() % (Z - 1));  // element Z-1 has no atoms
  std::vector<int64_t> elem_ptr, order;
  group_by_element(index, Z, elem_ptr, order);

  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    NNIP_CHECK(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-12 * (1.0 + std::fabs(b[i])));
  };
  const double* cf = coeff.data();
  // forward
  std::vector<double> out(N * K * C), ref(out.size());
  cpu::sc_forward<double>(x.data(), w.data(), index.data(), th, cf, ref.data(), N, M, Wn, C, 1);
  launch(N * C, threads, [&] {
    cuda::sc_forward_kernel<double>(x.data(), w.data(), index.data(), td, cf, out.data(), N, M, Z, Wn, C);
  });
  near(out, ref);
  // backward
  std::vector<double> gx(x.size()), gw(w.size()), gx_ref(x.size()), gw_ref(w.size());
  cpu::sc_backward<double>(g.data(), x.data(), w.data(), index.data(), th, cf, gx_ref.data(), gw_ref.data(), N, M, Z,
                           Wn, C, 1);
  launch(N * C, threads, [&] {
    cuda::sc_atom_kernel<double, 0>(g.data(), x.data(), w.data(), index.data(), nullptr, nullptr, td, cf, nullptr,
                                    gx.data(), N, M, Z, Wn, C);
  });
  const int64_t S = cuda::sc_weight_slices(N, Z, Wn, C);
  std::vector<double> ws(cuda::sc_workspace_elems(Z, Wn, C, S));
  auto weights = [&](bool tangent, const double* vxp, std::vector<double>& dst) {
    launch(Z * S * C, threads, [&] {
      if (tangent)
        cuda::sc_weight_partial_kernel<double, true>(g.data(), x.data(), vxp, order.data(), elem_ptr.data(), td, cf,
                                                     ws.data(), S, M, Z, Wn, C);
      else
        cuda::sc_weight_partial_kernel<double, false>(g.data(), x.data(), nullptr, order.data(), elem_ptr.data(), td,
                                                      cf, ws.data(), S, M, Z, Wn, C);
    });
    launch(Z * Wn * C, threads, [&] { cuda::sc_reduce_slices_kernel<double>(ws.data(), dst.data(), S, Z, Wn, C); });
  };
  weights(false, nullptr, gw);
  near(gx, gx_ref);
  near(gw, gw_ref);
  // double backward, with both tangents and with one of them
  for (int mode = 0; mode < 3; ++mode) {
    const double* vxp = mode == 2 ? nullptr : vx.data();
    const double* vwp = mode == 1 ? nullptr : vw.data();
    std::vector<double> dg(g.size()), dx(x.size()), dw(w.size(), 0.0), dg_ref(g.size()), dx_ref(x.size()),
        dw_ref(w.size());
    cpu::sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), vxp, vwp, th, cf, dg_ref.data(),
                                    dx_ref.data(), dw_ref.data(), N, M, Z, Wn, C, 1);
    launch(N * C, threads, [&] {
      cuda::sc_atom_kernel<double, 1>(g.data(), x.data(), w.data(), index.data(), vxp, vwp, td, cf, dg.data(),
                                      dx.data(), N, M, Z, Wn, C);
    });
    if (vxp) weights(true, vxp, dw);
    near(dg, dg_ref);
    near(dx, dx_ref);
    near(dw, dw_ref);
  }
  // an out-of-range element index gives zero rows; a chain deeper than kMaxChainDepth gives NaN
  if (N > 0) {
    index[0] = Z + 4;
    launch(N * C, threads, [&] {
      cuda::sc_forward_kernel<double>(x.data(), w.data(), index.data(), td, cf, out.data(), N, M, Z, Wn, C);
    });
    for (int64_t i = 0; i < K * C; ++i) NNIP_CHECK(out[i] == 0.0);
    index[0] = 0;
    std::vector<int64_t> deep_parent = parent, deep_var = var;
    for (int d = 0; d < cuda::kMaxChainDepth; ++d) {  // a chain of kMaxChainDepth + 1 factors
      deep_parent.push_back(static_cast<int64_t>(deep_parent.size()) - 1);
      deep_var.push_back(0);
    }
    std::vector<int64_t> deep_entry = entry_mono;
    deep_entry[0] = static_cast<int64_t>(deep_parent.size()) - 1;
    SCTables deep = td;
    deep.Q = static_cast<int64_t>(deep_parent.size());
    deep.mono_parent = deep_parent.data();
    deep.mono_var = deep_var.data();
    deep.entry_mono = deep_entry.data();
    launch(N * C, threads, [&] {
      cuda::sc_forward_kernel<double>(x.data(), w.data(), index.data(), deep, cf, out.data(), N, M, Z, Wn, C);
    });
    NNIP_CHECK(std::isnan(out[row_out[0] * C]));
  }
}

int main() {
  run_case(13, 1, 32, 1);
  run_case(40, 7, 64, 2);
  run_case(9, 33, 32, 3);
  run_case(0, 4, 32, 4);
  std::printf("symmetric contraction CUDA kernels (host emulation): ok\n");
  return 0;
}
