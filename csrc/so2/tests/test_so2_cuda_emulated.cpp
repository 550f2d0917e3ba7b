// The CUDA kernels of the eSEN rotations (csrc/so2/cuda/so2_kernels.cu) run on the host, thread by
// thread, against the CPU kernels (csrc/so2/cpu/so2_kernels.h): checks the device code's math and
// indexing on machines without a GPU. Valid because those kernels never synchronise or share data
// between threads. Launches use few blocks, so the grid-stride loops wrap. Also the inputs the CUDA
// glue does not validate (it would need a host sync): endpoint indices outside [0, A) and invalid
// block_rows tables. The fake <cuda_runtime_api.h> comes from csrc/tests/emulation/.
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
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
#include "so2/cuda/so2_kernels.cu"

#include "so2/tests/so2_case.h"
#include "tests/check.h"

using namespace nnip_scale;
using so2_case::Problem;

template <typename F>
static void launch(int64_t total, unsigned threads, F kernel) {
  blockDim.x = threads;
  gridDim.x = static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(3, (total + threads - 1) / threads)));
  for (unsigned b = 0; b < gridDim.x; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      blockIdx.x = b;
      threadIdx.x = t;
      kernel();
    }
}

static void near(const std::vector<double>& a, const std::vector<double>& b) {
  NNIP_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-12 * (1.0 + std::fabs(b[i])));
}

// With `bad`, some endpoint indices lie outside [0, A) (the CUDA glue does not range-check them): the
// kernels must read nothing out of bounds and treat those endpoints as adding nothing (so2_case.h).
static void run_case(int64_t lmax, int64_t mmax, int64_t C, int S, unsigned threads, uint64_t seed, bool bad) {
  const Problem p = so2_case::make_problem(seed, lmax, mmax, C, S, /*A=*/5, /*E=*/13, bad);
  const int64_t A = p.A, E = p.E, K = p.K, R = p.R, NB = p.NB, SC = S * C;
  cuda::SO2RowsDevice bd;
  bd.R = R;
  bd.rows = p.rows.data();
  if (!bad) {  // without bad keys the glue's CSR is the CPU's counting sort
    std::vector<int64_t> q(A + 1), o(E);
    so2::sort_by_key(p.i0.data(), E, A, q.data(), o.data());
    NNIP_CHECK(q == p.p0 && std::equal(o.begin(), o.end(), p.o0.begin()));
  }
  std::vector<double> out(E * R * SC, 9.0), sc(A * K * C, 9.0), gw(E * NB, 9.0);
  launch(E * R * SC, threads, [&] {
    cuda::so2_gather_kernel<double>(p.x.data(), p.w.data(), p.i0.data(), p.i1.data(), S, bd, out.data(), E, A, K, C,
                                    NB);
  });
  near(out, p.gather);
  launch(A * K * C, threads, [&] {
    cuda::so2_scatter_kernel<double>(p.y.data(), p.w.data(), p.p0.data(), p.o0.data(), p.p1.data(), p.o1.data(), S,
                                     bd, sc.data(), A, K, C, NB);
  });
  near(sc, p.scatter);
  launch(E * NB, threads, [&] {
    cuda::so2_wgrad_kernel<double>(p.y.data(), p.x.data(), p.i0.data(), p.i1.data(), S, bd, gw.data(), E, A, K, C,
                                   NB);
  });
  near(gw, p.wgrad);
}

// A table the CPU glue rejects (so2::check_rows) is not validated on CUDA: the kernels read nothing out of
// bounds and give NaN where they would have used it (the gather: that row's elements; the scatter and the
// Wigner gradient: every element), finite values elsewhere.
static void run_bad_rows() {
  Problem p = so2_case::make_problem(99, 2, 1, 3, 2, /*A=*/3, /*E=*/4, false);
  const int64_t A = p.A, E = p.E, K = p.K, R = p.R, NB = p.NB, C = p.C, S = p.S, SC = S * C;
  const int64_t bad_row = 3;
  for (int variant = 0; variant < 4; ++variant) {
    std::vector<int64_t> rows(p.rows);
    if (variant == 0) rows[2 * bad_row + 1] = NB - 1;  // block past NB
    if (variant == 1) rows[2 * bad_row + 1] = -2;      // negative offset
    if (variant == 2) rows[2 * bad_row] = 3;           // degree needs 16 > K components
    if (variant == 3) rows[2 * bad_row] = -1;          // negative degree
    so2::BlockRows bh;
    bh.R = R;
    bh.rows = rows.data();
    NNIP_CHECK(so2::check_rows(bh, NB, K) != nullptr);  // the CPU glue rejects it
    cuda::SO2RowsDevice bd;
    bd.R = R;
    bd.rows = rows.data();
    std::vector<double> out(E * R * SC, 9.0), sc(A * K * C, 9.0), gw(E * NB, 9.0);
    launch(E * R * SC, 32, [&] {
      cuda::so2_gather_kernel<double>(p.x.data(), p.w.data(), p.i0.data(), p.i1.data(), S, bd, out.data(), E, A, K,
                                      C, NB);
    });
    for (int64_t t = 0; t < E * R * SC; ++t) NNIP_CHECK(std::isnan(out[t]) == ((t / SC) % R == bad_row));
    launch(A * K * C, 32, [&] {
      cuda::so2_scatter_kernel<double>(p.y.data(), p.w.data(), p.p0.data(), p.o0.data(), p.p1.data(), p.o1.data(), S,
                                       bd, sc.data(), A, K, C, NB);
    });
    launch(E * NB, 32, [&] {
      cuda::so2_wgrad_kernel<double>(p.y.data(), p.x.data(), p.i0.data(), p.i1.data(), S, bd, gw.data(), E, A, K, C,
                                     NB);
    });
    for (double v : sc) NNIP_CHECK(std::isnan(v));
    for (double v : gw) NNIP_CHECK(std::isnan(v));
  }
}

int main() {
  uint64_t seed = 1;
  for (int64_t lmax = 1; lmax <= 6; ++lmax)
    for (int64_t mmax : {int64_t{0}, std::min<int64_t>(lmax, 2), lmax})
      for (int64_t C : {1, 5, 33})
        for (int S : {1, 2}) run_case(lmax, mmax, C, S, 32, seed++, false);
  for (int64_t lmax : {1, 3, 6})
    for (int S : {1, 2}) run_case(lmax, 1, 7, S, 32, seed++, true);
  run_bad_rows();
  std::printf("so2 CUDA kernels (emulated on the host): ok\n");
  return 0;
}
