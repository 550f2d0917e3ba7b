// The CUDA kernels of the eSEN rotations (csrc/so2/cuda/so2_kernels.cu) run on the host, thread by
// thread, against the CPU kernels (csrc/so2/cpu/so2_kernels.h): checks the device code's math and
// indexing on machines without a GPU. Valid because those kernels never synchronise or share data
// between threads. Launches use few blocks, so the grid-stride loops wrap. The fake
// <cuda_runtime_api.h> comes from csrc/tests/emulation/.
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

#include "tests/check.h"
#include "so2/cpu/so2_kernels.h"

using namespace nnip_scale;

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

// (ℓ, offset) per row of the m-major layout of (lmax, mmax), entries grouped by degree
static std::vector<int64_t> block_rows(int64_t lmax, int64_t mmax, int64_t* NB) {
  std::vector<int64_t> ells;
  for (int64_t l = 0; l <= lmax; ++l) ells.push_back(l);
  for (int64_t m = 1; m <= mmax; ++m)
    for (int sign = 0; sign < 2; ++sign)
      for (int64_t l = m; l <= lmax; ++l) ells.push_back(l);
  std::vector<int64_t> rows(2 * ells.size());
  int64_t off = 0;
  for (int64_t l = 0; l <= lmax; ++l)
    for (size_t r = 0; r < ells.size(); ++r)
      if (ells[r] == l) {
        rows[2 * r] = l;
        rows[2 * r + 1] = off;
        off += 2 * l + 1;
      }
  *NB = off;
  return rows;
}

static void run_case(int64_t lmax, int64_t mmax, int64_t C, int S, unsigned threads, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  int64_t NB = 0;
  std::vector<int64_t> rows = block_rows(lmax, mmax, &NB);
  so2::BlockRows bh;
  bh.R = static_cast<int64_t>(rows.size() / 2);
  bh.rows = rows.data();
  cuda::SO2RowsDevice bd;
  bd.R = bh.R;
  bd.rows = rows.data();
  const int64_t K = (lmax + 1) * (lmax + 1), R = bh.R, A = 5, E = 13, SC = S * C;
  std::vector<double> x(A * K * C), w(E * NB), y(E * R * SC);
  for (auto* v : {&x, &w, &y})
    for (auto& e : *v) e = val(rng);
  std::vector<int64_t> i0(E), i1(E);
  for (auto& v : i0) v = static_cast<int64_t>(rng() % (A - 1));  // atom A-1: no edges
  for (auto& v : i1) v = static_cast<int64_t>(rng() % (A - 1));
  const int64_t* ip[2] = {i0.data(), i1.data()};
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    NNIP_CHECK(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-12 * (1.0 + std::fabs(b[i])));
  };
  // gather
  std::vector<double> out(E * R * SC, 9.0), ref(out.size());
  so2::rotate_gather<double>(x.data(), w.data(), ip, S, bh, ref.data(), E, K, C, NB, 1);
  launch(E * R * SC, threads, [&] {
    cuda::so2_gather_kernel<double>(x.data(), w.data(), i0.data(), i1.data(), S, bd, out.data(), E, K, C, NB);
  });
  near(out, ref);
  // scatter
  std::vector<int64_t> p0(A + 1), o0(E), p1(A + 1), o1(E);
  so2::sort_by_key(i0.data(), E, A, p0.data(), o0.data());
  so2::sort_by_key(i1.data(), E, A, p1.data(), o1.data());
  const int64_t* pp[2] = {p0.data(), p1.data()};
  const int64_t* op[2] = {o0.data(), o1.data()};
  std::vector<double> sc(A * K * C, 9.0), sc_ref(sc.size());
  so2::rotate_scatter<double>(y.data(), w.data(), pp, op, S, bh, sc_ref.data(), A, E, K, C, NB, 1);
  launch(A * K * C, threads, [&] {
    cuda::so2_scatter_kernel<double>(y.data(), w.data(), p0.data(), o0.data(), p1.data(), o1.data(), S, bd, sc.data(),
                                     A, K, C, NB);
  });
  near(sc, sc_ref);
  // Wigner gradient
  std::vector<double> gw(E * NB, 9.0), gw_ref(gw.size());
  so2::wigner_grad<double>(y.data(), x.data(), ip, S, bh, gw_ref.data(), E, K, C, NB, 1);
  launch(E * NB, threads, [&] {
    cuda::so2_wgrad_kernel<double>(y.data(), x.data(), i0.data(), i1.data(), S, bd, gw.data(), E, K, C, NB);
  });
  near(gw, gw_ref);
}

int main() {
  uint64_t seed = 1;
  for (int64_t lmax = 1; lmax <= 6; ++lmax)
    for (int64_t mmax : {int64_t{0}, std::min<int64_t>(lmax, 2), lmax})
      for (int64_t C : {1, 5, 33})
        for (int S : {1, 2}) run_case(lmax, mmax, C, S, 32, seed++);
  std::printf("so2 CUDA kernels (emulated on the host): ok\n");
  return 0;
}
