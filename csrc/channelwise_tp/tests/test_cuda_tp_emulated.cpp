// The CUDA kernels of the channel-wise TP (channelwise_tp/cuda/channelwise_tp_kernels.cu) run on the host
// against the CPU kernels (csrc/tests/emulation/cuda_emulation.h: one host thread per CUDA thread, so the
// blocks' shared memory and __syncthreads are real; blocks in turn, at most 3, so the grid-stride loops
// wrap): forward, grad_x + grad_w, grad_sh, with random tables, channel counts below / across a warp,
// edge chunks of 1, 3 and the default (segments crossing chunk boundaries), an atom without edges, a
// receiver without edges, no edges at all, out-of-range edge indices (contribute nothing), and edges sorted
// by receiver read without an order array (the batch's edge layout).
#include "tests/emulation/cuda_emulation.h"
// (the emulation header first: the .cu below is compiled as host code)
#include "channelwise_tp/cuda/channelwise_tp_kernels.cu"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "channelwise_tp/tests/tp_case.h"
#include "tests/check.h"

using namespace nnip_scale;

static void near(const std::vector<double>& a, const std::vector<double>& b) {
  NNIP_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) NNIP_CHECK_NEAR(a[i], b[i], 1e-12 * (1.0 + std::fabs(b[i])));
}

static unsigned blocks(int64_t n) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(3, n))); }

struct Result {
  std::vector<double> out, gw, gx, gsh;
};

// The three kernels on problem p with edge chunks of `chunk` (sender / receiver arrays may differ from p's).
static Result run_emulated(const Problem& p, const std::vector<int64_t>& snd, const std::vector<int64_t>& rcv,
                           int64_t chunk) {
  const Case& c = p.c;
  const TPTables t = c.tables();
  const double* cf = c.coeff.data();
  Result r{std::vector<double>(p.out.size(), 7.0), std::vector<double>(p.gw.size(), 0.0),  // grad_w: zeroed
           std::vector<double>(p.gx.size(), 7.0), std::vector<double>(p.gsh.size(), 7.0)};
  // the edge grouping of the glue (a stable sort), on the given indices: out-of-range keys in no segment
  auto group = [&](const std::vector<int64_t>& key, int64_t n, std::vector<int64_t>& ptr, std::vector<int64_t>& ord) {
    ptr.assign(n + 1, 0);
    ord.clear();
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t e = 0; e < p.E; ++e)
        if (key[e] == k) ord.push_back(e);
      ptr[k + 1] = static_cast<int64_t>(ord.size());
    }
    for (int64_t e = 0; e < p.E; ++e)  // the sort also carries the others, after the last segment
      if (key[e] < 0 || key[e] >= n) ord.push_back(e);
  };
  std::vector<int64_t> rptr, rord, sptr, sord;
  group(rcv, p.N, rptr, rord);
  group(snd, p.A, sptr, sord);
  emulate_launch(blocks(p.N), cuda::tp_block_threads(p.C), [&] {
    cuda::tp_forward_kernel<double>(p.w.data(), p.x.data(), p.sh.data(), snd.data(), rptr.data(), rord.data(), t, cf,
                                    r.out.data(), p.N, p.A, c.P, c.I, c.J, p.C, chunk);
  });
  emulate_launch(blocks(p.A), cuda::tp_block_threads(p.C), [&] {
    cuda::tp_backward_sender_kernel<double>(p.g.data(), p.w.data(), p.x.data(), p.sh.data(), rcv.data(), sptr.data(),
                                            sord.data(), t, cf, r.gw.data(), r.gx.data(), p.N, p.A, c.P, c.I, c.J,
                                            p.C, chunk);
  });
  emulate_launch(blocks(p.E), cuda::tp_block_threads(std::max(t.Q, c.J)), [&] {
    cuda::tp_grad_sh_kernel<double>(p.g.data(), p.w.data(), p.x.data(), snd.data(), rcv.data(), t, cf, r.gsh.data(),
                                    p.E, p.N, p.A, c.P, c.I, c.J, p.C);
  });
  return r;
}

// The edges sorted by receiver (a collated batch) and the forward kernel given no order (the glue passes the
// batch's receiver_ptr and a null order): the output of the unsorted problem.
static void check_sorted_edges_need_no_order(const Problem& p, int64_t chunk) {
  const Case& c = p.c;
  std::vector<int64_t> perm(p.E);
  for (int64_t e = 0; e < p.E; ++e) perm[e] = e;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return p.rcv[a] < p.rcv[b]; });
  std::vector<double> w(p.w.size()), sh(p.sh.size());
  std::vector<int64_t> snd(p.E), ptr(p.N + 1, 0);
  for (int64_t e = 0; e < p.E; ++e) {
    const int64_t f = perm[e];
    std::copy(p.w.begin() + f * c.P * p.C, p.w.begin() + (f + 1) * c.P * p.C, w.begin() + e * c.P * p.C);
    std::copy(p.sh.begin() + f * c.J, p.sh.begin() + (f + 1) * c.J, sh.begin() + e * c.J);
    snd[e] = p.snd[f];
    ++ptr[p.rcv[f] + 1];
  }
  for (int64_t r = 0; r < p.N; ++r) ptr[r + 1] += ptr[r];
  std::vector<double> out(p.out.size(), 7.0);
  const TPTables t = c.tables();
  emulate_launch(blocks(p.N), cuda::tp_block_threads(p.C), [&] {
    cuda::tp_forward_kernel<double>(w.data(), p.x.data(), sh.data(), snd.data(), ptr.data(), nullptr, t,
                                    c.coeff.data(), out.data(), p.N, p.A, c.P, c.I, c.J, p.C, chunk);
  });
  near(out, p.out);
}

static void check_problem(uint64_t seed, int64_t A, int64_t E, int64_t C) {
  const Problem p = make_problem(seed, A, E, C);
  const int64_t fit = cuda::tp_edge_chunk(p.c.tables().Q, sizeof(double));
  NNIP_CHECK(fit >= 1);
  for (int64_t chunk : {int64_t{1}, int64_t{3}, fit}) {
    const Result r = run_emulated(p, p.snd, p.rcv, chunk);
    near(r.out, p.out);
    near(r.gw, p.gw);
    near(r.gx, p.gx);
    near(r.gsh, p.gsh);
    check_sorted_edges_need_no_order(p, chunk);
  }
  if (E < 2) return;
  // edge 0 with an out-of-range sender and edge 1 with an out-of-range receiver contribute nothing: the
  // CPU result with their weights zeroed; their grad_w and grad_sh rows are zero
  std::vector<int64_t> snd = p.snd, rcv = p.rcv;
  snd[0] = A + 5;
  rcv[1] = -1;
  Problem q = p;
  const Case& c = p.c;
  std::fill(q.w.begin(), q.w.begin() + 2 * c.P * C, 0.0);
  std::fill(q.sh.begin(), q.sh.begin() + 2 * c.J, 0.0);
  const TPTables t = c.tables();
  nnip_scale::cpu::channelwise_tp_forward<double>(q.w.data(), q.x.data(), q.sh.data(), q.snd.data(), q.rptr.data(),
                                                  q.rorder.data(), t, c.coeff.data(), q.out.data(), q.N, c.P, c.I,
                                                  c.J, C, 1);
  nnip_scale::cpu::channelwise_tp_backward<double>(q.g.data(), q.w.data(), q.x.data(), q.sh.data(), q.rcv.data(),
                                                   q.sptr.data(), q.sorder.data(), t, c.coeff.data(), nullptr,
                                                   q.gx.data(), nullptr, A, c.P, c.I, c.J, C, 1);
  const Result r = run_emulated(p, snd, rcv, 3);
  near(r.out, q.out);
  near(r.gx, q.gx);
  for (int64_t i = 0; i < 2 * c.P * C; ++i) NNIP_CHECK(r.gw[i] == 0.0);
  for (int64_t i = 0; i < 2 * c.J; ++i) NNIP_CHECK(r.gsh[i] == 0.0);
  near(std::vector<double>(r.gw.begin() + 2 * c.P * C, r.gw.end()),
       std::vector<double>(p.gw.begin() + 2 * c.P * C, p.gw.end()));
}

int main() {
  check_problem(1, 7, 40, 1);
  check_problem(2, 9, 60, 5);
  check_problem(3, 5, 23, 37);  // more channels than one warp
  check_problem(4, 4, 0, 3);    // no edges: zero output and grad_x
  check_problem(5, 1, 6, 2);    // one atom
  std::printf("channel-wise TP CUDA kernels (host emulation): ok\n");
  return 0;
}
