// The pure-CUDA symmetric-contraction kernels against the CPU kernels (random tables of degree <= 3
// with a constant monomial from sc_case.h, channel counts 1 / 33, an element without atoms, an
// out-of-range index → zero rows); exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <random>
#include <vector>

#include "tests/check.h"
#include "tests/cuda_device.h"
#include "symmetric_contraction/cpu/symmetric_contraction_kernels.h"
#include "symmetric_contraction/cuda/symmetric_contraction_kernels.h"
#include "symmetric_contraction/tests/sc_case.h"

namespace {

void run_case(int64_t N, int64_t C, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  const int64_t M = 5, K = 4, Wn = 6, Z = 3;
  const Case c = random_case(rng, M, K, Wn, Z, 7, 3 * K, /*rows_by_output=*/true, /*empty_row=*/-1);
  const auto& coeff = c.coeff;
  const nnip_scale::SCTables th = c.tables();
  NNIP_CHECK(nnip_scale::check_sc_tables(th, M, Wn) == nullptr);

  std::vector<double> x(N * M * C), w(Z * Wn * C), g(N * K * C), vx(x.size()), vw(w.size());
  for (auto* v : {&x, &w, &g, &vx, &vw})
    for (auto& e : *v) e = val(rng);
  std::vector<int64_t> index(N);
  for (auto& i : index) i = static_cast<int64_t>(rng() % (Z - 1));  // element Z-1 has no atoms
  // host reference (CPU kernels)
  std::vector<double> out(N * K * C), gx(x.size()), gw(w.size()), dg(g.size()), dx(x.size()), dw(w.size());
  nnip_scale::cpu::sc_forward<double>(x.data(), w.data(), index.data(), th, coeff.data(), out.data(), N, M, Wn, C, 1);
  nnip_scale::cpu::sc_backward<double>(g.data(), x.data(), w.data(), index.data(), th, coeff.data(), gx.data(),
                                       gw.data(), N, M, Z, Wn, C, 1);
  nnip_scale::cpu::sc_double_backward<double>(g.data(), x.data(), w.data(), index.data(), vx.data(), vw.data(), th,
                                              coeff.data(), dg.data(), dx.data(), dw.data(), N, M, Z, Wn, C, 1);
  std::vector<int64_t> elem_ptr, order;
  group_by_element(index, Z, elem_ptr, order);

  nnip_scale::SCTables td = th;  // the same tables in device memory
  td.mono_parent = upload(c.parent);
  td.mono_var = upload(c.var);
  td.row_ptr = upload(c.row_ptr);
  td.entry_mono = upload(c.entry_mono);
  td.row_out = upload(c.row_out);
  td.row_weight = upload(c.row_weight);
  double *d_coeff = upload(coeff), *d_x = upload(x), *d_w = upload(w), *d_g = upload(g), *d_vx = upload(vx),
         *d_vw = upload(vw);
  int64_t *d_index = upload(index), *d_order = upload(order), *d_ptr = upload(elem_ptr);
  const int64_t S = nnip_scale::cuda::sc_weight_slices(N, Z, Wn, C);
  std::vector<double> zeros_ws(nnip_scale::cuda::sc_workspace_elems(Z, Wn, C, S), 0.0);
  double* d_ws = upload(zeros_ws);
  double *d_out = upload(out), *d_gx = upload(gx), *d_gw = upload(gw), *d_dg = upload(dg), *d_dx = upload(dx),
         *d_dw = upload(dw);
  using nnip_scale::cuda::sc_backward;
  using nnip_scale::cuda::sc_double_backward;
  using nnip_scale::cuda::sc_forward;
  NNIP_CHECK(sc_forward<double>(d_x, d_w, d_index, td, d_coeff, d_out, N, M, Z, Wn, C, 0) == cudaSuccess);
  NNIP_CHECK(sc_backward<double>(d_g, d_x, d_w, d_index, d_order, d_ptr, td, d_coeff, d_gx, d_gw, d_ws, S, N, M, Z, Wn, C, 0) ==
             cudaSuccess);
  NNIP_CHECK(sc_double_backward<double>(d_g, d_x, d_w, d_index, d_order, d_ptr, d_vx, d_vw, td, d_coeff, d_dg, d_dx, d_dw, d_ws,
                                S, N, M, Z, Wn, C, 0) == cudaSuccess);
  NNIP_CHECK(cudaDeviceSynchronize() == cudaSuccess);
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    NNIP_CHECK(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-10 * (1.0 + std::fabs(b[i])));
  };
  near(download(d_out, out.size()), out);
  near(download(d_gx, gx.size()), gx);
  near(download(d_gw, gw.size()), gw);
  near(download(d_dg, dg.size()), dg);
  near(download(d_dx, dx.size()), dx);
  near(download(d_dw, dw.size()), dw);
  // an out-of-range element index gives a zero output row (the CPU kernels reject it)
  if (N > 0) {
    const int64_t bad = 7;
    NNIP_CHECK(cudaMemcpy(d_index, &bad, sizeof(int64_t), cudaMemcpyHostToDevice) == cudaSuccess);
    NNIP_CHECK(sc_forward<double>(d_x, d_w, d_index, td, d_coeff, d_out, N, M, Z, Wn, C, 0) == cudaSuccess);
    const auto o = download(d_out, out.size());
    for (int64_t i = 0; i < K * C; ++i) NNIP_CHECK(o[i] == 0.0);
  }
  const std::vector<const void*> buffers{d_coeff, d_x, d_w, d_g, d_vx, d_vw, d_index, d_order, d_ptr, d_ws, d_out,
                                         d_gx, d_gw, d_dg, d_dx, d_dw, td.mono_parent, td.mono_var, td.row_ptr,
                                         td.entry_mono, td.row_out, td.row_weight};
  for (const void* p : buffers) cudaFree(const_cast<void*>(p));
}

}  // namespace

int main() {
  if (const int rc = require_gpu()) return rc;
  run_case(40, 1, 1);
  run_case(300, 33, 2);
  run_case(0, 5, 3);
  std::printf("cuda symmetric contraction kernels: ok\n");
  return 0;
}
