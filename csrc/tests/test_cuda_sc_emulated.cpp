// The CUDA kernels of the symmetric contraction (csrc/cuda/symmetric_contraction_kernels.cu) run on the
// host, thread by thread, against the CPU kernels: checks the device code's math and indexing on
// machines without a GPU. Valid because those kernels never synchronise or share data between threads
// (each thread uses only its own shared-memory column). Launches use few blocks, so the grid-stride
// loops wrap. The fake <cuda_runtime_api.h> comes from csrc/tests/emulation/.
#define NNIP_CUDA_EMULATION
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

struct EmuDim {
  unsigned x = 0;
};
static EmuDim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
namespace nnip_scale {
namespace cuda {
namespace {
alignas(64) unsigned char smem_raw[1 << 18];  // the dynamic shared memory of the emulated block
}
}  // namespace cuda
}  // namespace nnip_scale
#include "cuda/symmetric_contraction_kernels.cu"

#include "check.h"
#include "cpu/symmetric_contraction_kernels.h"

using namespace nnip_scale;

template <typename F>
static void launch(int64_t total, unsigned threads, F kernel) {
  blockDim.x = threads;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(3, (total + threads - 1) / threads));
  gridDim.x = static_cast<unsigned>(blocks);
  for (unsigned b = 0; b < gridDim.x; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      blockIdx.x = b;
      threadIdx.x = t;
      kernel();
    }
}

static void run_case(int64_t N, int64_t C, unsigned threads, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  const int64_t M = 5, K = 4, Wn = 6, Z = 3;
  std::vector<int64_t> parent{-1}, var{-1}, row_ptr{0}, entry_mono, row_out, row_weight;
  std::vector<double> coeff;
  for (int64_t m = 0; m < M; ++m) {
    parent.push_back(-1);
    var.push_back(m);
  }
  for (int d = 2; d <= 3; ++d) {
    const int64_t lo = d == 2 ? 1 : 1 + M, hi = static_cast<int64_t>(parent.size());
    for (int i = 0; i < 7; ++i) {
      parent.push_back(lo + static_cast<int64_t>(rng() % (hi - lo)));
      var.push_back(static_cast<int64_t>(rng() % M));
    }
  }
  const int64_t Q = static_cast<int64_t>(parent.size());
  for (int64_t r = 0; r < 12; ++r) {  // rows in random output order (the kernels accept any order)
    for (int64_t n = 0, ne = 1 + static_cast<int64_t>(rng() % 4); n < ne; ++n) {
      entry_mono.push_back(static_cast<int64_t>(rng() % Q));
      coeff.push_back(val(rng));
    }
    row_ptr.push_back(static_cast<int64_t>(entry_mono.size()));
    row_out.push_back(static_cast<int64_t>(rng() % K));
    row_weight.push_back(static_cast<int64_t>(rng() % Wn));
  }
  cpu::SCTables th;
  cuda::SCTablesDevice td;
  th.Q = td.Q = Q;
  th.R = td.R = static_cast<int64_t>(row_out.size());
  th.nnz = td.nnz = static_cast<int64_t>(entry_mono.size());
  th.K = td.K = K;
  th.mono_parent = td.mono_parent = parent.data();
  th.mono_var = td.mono_var = var.data();
  th.row_ptr = td.row_ptr = row_ptr.data();
  th.entry_mono = td.entry_mono = entry_mono.data();
  th.row_out = td.row_out = row_out.data();
  th.row_weight = td.row_weight = row_weight.data();
  NNIP_CHECK(cpu::check_sc_tables(th, M, Wn) == nullptr);

  std::vector<double> x(N * M * C), w(Z * Wn * C), g(N * K * C), vx(x.size()), vw(w.size());
  for (auto* v : {&x, &w, &g, &vx, &vw})
    for (auto& e : *v) e = val(rng);
  std::vector<int64_t> index(N);
  for (auto& i : index) i = static_cast<int64_t>(rng() % (Z - 1));  // element Z-1 has no atoms
  std::vector<int64_t> elem_ptr(Z + 1, 0), order(N);
  for (int64_t n = 0; n < N; ++n) ++elem_ptr[index[n] + 1];
  for (int64_t z = 0; z < Z; ++z) elem_ptr[z + 1] += elem_ptr[z];
  std::vector<int64_t> next(elem_ptr.begin(), elem_ptr.end() - 1);
  for (int64_t n = 0; n < N; ++n) order[next[index[n]]++] = n;

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
    cuda::SCTablesDevice deep = td;
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
