// The pure-CUDA channel-wise TP kernels on a GPU against the CPU kernels (random tables from tp_case.h,
// channel counts 1 / 5 / 37 / 130, no edges, bitwise-repeatable results); exits 77 (ctest: skipped)
// without a GPU.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "channelwise_tp/cuda/channelwise_tp_kernels.h"
#include "channelwise_tp/tests/tp_case.h"
#include "tests/check.h"
#include "tests/cuda_device.h"

namespace {

void near(const std::vector<double>& a, const std::vector<double>& b) {
  NNIP_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-10 * (1.0 + std::fabs(b[i])));
}

void run_case(uint64_t seed, int64_t A, int64_t E, int64_t C) {
  const Problem p = make_problem(seed, A, E, C);
  const Case& c = p.c;
  nnip_scale::TPTables td = c.tables();  // the same tables in device memory
  td.path_of_k = upload(c.path_of_k);
  td.pair_ptr = upload(c.pair_ptr);
  td.pair_x = upload(c.pair_x);
  td.entry_ptr = upload(c.entry_ptr);
  td.entry_sh = upload(c.entry_sh);
  double *d_cf = upload(c.coeff), *d_w = upload(p.w), *d_x = upload(p.x), *d_sh = upload(p.sh), *d_g = upload(p.g);
  int64_t *d_snd = upload(p.snd), *d_rcv = upload(p.rcv), *d_rptr = upload(p.rptr), *d_rord = upload(p.rorder),
          *d_sptr = upload(p.sptr), *d_sord = upload(p.sorder);
  double *d_out = upload(std::vector<double>(p.out.size(), 7.0)), *d_gx = upload(std::vector<double>(p.gx.size(), 7.0)),
         *d_gsh = upload(std::vector<double>(p.gsh.size(), 7.0)), *d_gw = upload(std::vector<double>(p.gw.size(), 0.0));
  std::vector<double> first;
  for (int rep = 0; rep < 2; ++rep) {
    NNIP_CHECK(nnip_scale::cuda::tp_forward<double>(d_w, d_x, d_sh, d_snd, d_rptr, d_rord, td, d_cf, d_out, p.N, A,
                                                    c.P, c.I, c.J, C, 0) == cudaSuccess);
    NNIP_CHECK(cudaMemset(d_gw, 0, sizeof(double) * (p.gw.empty() ? 1 : p.gw.size())) == cudaSuccess);
    NNIP_CHECK(nnip_scale::cuda::tp_backward<double>(d_g, d_w, d_x, d_sh, d_snd, d_rcv, d_sptr, d_sord, td, d_cf, d_gw,
                                                     d_gx, d_gsh, E, p.N, A, c.P, c.I, c.J, C, 0) == cudaSuccess);
    NNIP_CHECK(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<double> all = download(d_out, p.out.size());
    for (auto* part : {&p.gw, &p.gx, &p.gsh}) {
      const double* d = part == &p.gw ? d_gw : (part == &p.gx ? d_gx : d_gsh);
      const auto h = download(d, part->size());
      near(h, *part);
      all.insert(all.end(), h.begin(), h.end());
    }
    near(std::vector<double>(all.begin(), all.begin() + p.out.size()), p.out);
    if (rep == 0) first = all;
    else NNIP_CHECK(all == first);  // deterministic: bitwise equal across runs
  }
  for (const void* ptr : {static_cast<const void*>(d_cf), static_cast<const void*>(d_w), static_cast<const void*>(d_x),
                          static_cast<const void*>(d_sh), static_cast<const void*>(d_g), static_cast<const void*>(d_snd),
                          static_cast<const void*>(d_rcv), static_cast<const void*>(d_rptr),
                          static_cast<const void*>(d_rord), static_cast<const void*>(d_sptr),
                          static_cast<const void*>(d_sord), static_cast<const void*>(d_out),
                          static_cast<const void*>(d_gx), static_cast<const void*>(d_gsh), static_cast<const void*>(d_gw),
                          static_cast<const void*>(td.path_of_k), static_cast<const void*>(td.pair_ptr),
                          static_cast<const void*>(td.pair_x), static_cast<const void*>(td.entry_ptr),
                          static_cast<const void*>(td.entry_sh)})
    cudaFree(const_cast<void*>(ptr));
}

}  // namespace

int main() {
  if (const int rc = require_gpu()) return rc;
  run_case(1, 30, 400, 1);
  run_case(2, 50, 900, 5);
  run_case(3, 200, 3000, 37);
  run_case(4, 40, 500, 130);
  run_case(5, 10, 0, 8);
  std::printf("cuda channel-wise TP kernels: ok\n");
  return 0;
}
