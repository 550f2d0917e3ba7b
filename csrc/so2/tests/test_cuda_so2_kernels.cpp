// The pure-CUDA eSEN rotation kernels on a GPU against the CPU kernels (random problems from so2_case.h:
// ℓmax 1–6, mmax 0..ℓmax, channel counts 1 / 7 / 33 / 129, one and two endpoint halves, endpoint indices
// outside [0, A), no edges, bitwise-repeatable results, NaN for an invalid block_rows table); exits 77
// (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "so2/cuda/so2_kernels.h"
#include "so2/tests/so2_case.h"
#include "tests/check.h"
#include "tests/cuda_device.h"

namespace {

using so2_case::Problem;

void near(const std::vector<double>& a, const std::vector<double>& b) {
  NNIP_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-12 * (1.0 + std::fabs(b[i])));
}

void free_all(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) cudaFree(const_cast<void*>(p));
}

// Runs the three launchers twice on `p` (with `rows` as the table) and returns gather, scatter and Wigner
// gradient concatenated; the two runs must agree bitwise.
std::vector<double> run_device(const Problem& p, const std::vector<int64_t>& rows) {
  const int64_t A = p.A, E = p.E, K = p.K, R = p.R, NB = p.NB, C = p.C, SC = p.S * C;
  double *d_x = upload(p.x), *d_w = upload(p.w), *d_y = upload(p.y);
  int64_t *d_i0 = upload(p.i0), *d_i1 = upload(p.i1), *d_p0 = upload(p.p0), *d_o0 = upload(p.o0),
          *d_p1 = upload(p.p1), *d_o1 = upload(p.o1), *d_rows = upload(rows);
  const size_t n_out = E * R * SC, n_sc = A * K * C, n_gw = E * NB;
  double *d_out = upload(std::vector<double>(n_out, 7.0)), *d_sc = upload(std::vector<double>(n_sc, 7.0)),
         *d_gw = upload(std::vector<double>(n_gw, 7.0));
  nnip_scale::cuda::SO2RowsDevice b;
  b.R = R;
  b.rows = d_rows;
  std::vector<double> first;
  for (int rep = 0; rep < 2; ++rep) {
    NNIP_CHECK(nnip_scale::cuda::so2_rotate_gather(d_x, d_w, d_i0, d_i1, p.S, b, d_out, E, A, K, C, NB, 0) ==
               cudaSuccess);
    NNIP_CHECK(nnip_scale::cuda::so2_rotate_scatter(d_y, d_w, d_p0, d_o0, d_p1, d_o1, p.S, b, d_sc, A, K, C, NB, 0) ==
               cudaSuccess);
    NNIP_CHECK(nnip_scale::cuda::so2_wigner_grad(d_y, d_x, d_i0, d_i1, p.S, b, d_gw, E, A, K, C, NB, 0) ==
               cudaSuccess);
    NNIP_CHECK(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<double> all = download(d_out, n_out);
    for (const auto& part : {download(d_sc, n_sc), download(d_gw, n_gw)}) all.insert(all.end(), part.begin(), part.end());
    if (rep == 0) {
      first = all;
    } else {  // deterministic: bitwise equal across runs (a NaN where the first run had one)
      NNIP_CHECK(all.size() == first.size());
      for (size_t i = 0; i < all.size(); ++i)
        NNIP_CHECK(all[i] == first[i] || (std::isnan(all[i]) && std::isnan(first[i])));
    }
  }
  free_all({d_x, d_w, d_y, d_i0, d_i1, d_p0, d_o0, d_p1, d_o1, d_rows, d_out, d_sc, d_gw});
  return first;
}

void run_case(uint64_t seed, int64_t lmax, int64_t mmax, int64_t C, int S, int64_t A, int64_t E, bool bad) {
  const Problem p = so2_case::make_problem(seed, lmax, mmax, C, S, A, E, bad);
  const std::vector<double> all = run_device(p, p.rows);
  const size_t n_out = p.gather.size(), n_sc = p.scatter.size();
  near(std::vector<double>(all.begin(), all.begin() + n_out), p.gather);
  near(std::vector<double>(all.begin() + n_out, all.begin() + n_out + n_sc), p.scatter);
  near(std::vector<double>(all.begin() + n_out + n_sc, all.end()), p.wgrad);
}

// A block_rows table the CPU glue rejects: NaN where it is read (the gather's elements of the bad row, every
// element of the scatter and the Wigner gradient), never an out-of-bounds read.
void run_bad_rows() {
  const Problem p = so2_case::make_problem(77, 2, 1, 5, 2, 6, 40, false);
  const int64_t R = p.R, SC = p.S * p.C, bad_row = 3;
  std::vector<int64_t> rows(p.rows);
  rows[2 * bad_row + 1] = p.NB - 1;  // the block runs past NB
  const std::vector<double> all = run_device(p, rows);
  const size_t n_out = p.gather.size();
  for (size_t t = 0; t < n_out; ++t) NNIP_CHECK(std::isnan(all[t]) == ((static_cast<int64_t>(t) / SC) % R == bad_row));
  for (size_t t = n_out; t < all.size(); ++t) NNIP_CHECK(std::isnan(all[t]));
}

}  // namespace

int main() {
  if (const int rc = require_gpu()) return rc;
  uint64_t seed = 1;
  for (int64_t lmax = 1; lmax <= 6; ++lmax)
    for (int64_t mmax : {int64_t{0}, std::min<int64_t>(lmax, 2), lmax})
      for (int S : {1, 2}) run_case(seed++, lmax, mmax, lmax % 2 ? 7 : 33, S, 30, 400, false);
  for (int64_t C : {1, 129}) run_case(seed++, 4, 2, C, 2, 50, 1500, false);
  for (int S : {1, 2}) run_case(seed++, 3, 2, 16, S, 20, 300, true);  // endpoints outside [0, A)
  for (int S : {1, 2}) run_case(seed++, 2, 1, 8, S, 10, 0, false);    // no edges
  run_bad_rows();
  std::printf("cuda so2 kernels: ok\n");
  return 0;
}
