// Random channel-wise TP tables and problems for the C++ tests of the family (CPU kernels, the CUDA
// kernels on a GPU and in host emulation). The kernels are table-driven: nothing about ℓ is compiled in.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "channelwise_tp/cpu/channelwise_tp_kernels.h"

// K output rows in P paths over I x rows and J harmonics; row 2 has no pairs.
struct Case {
  int64_t K = 6, P = 3, I = 4, J = 5;
  std::vector<int64_t> path_of_k, pair_ptr{0}, pair_x, entry_ptr{0}, entry_sh;
  std::vector<double> coeff;
  nnip_scale::TPTables tables() const {
    nnip_scale::TPTables t;
    t.K = K;
    t.Q = static_cast<int64_t>(pair_x.size());
    t.nnz = static_cast<int64_t>(entry_sh.size());
    t.path_of_k = path_of_k.data();
    t.pair_ptr = pair_ptr.data();
    t.pair_x = pair_x.data();
    t.entry_ptr = entry_ptr.data();
    t.entry_sh = entry_sh.data();
    return t;
  }
};

inline Case random_case(std::mt19937_64& rng) {
  Case c;
  std::uniform_real_distribution<double> val(-1, 1);
  for (int64_t k = 0; k < c.K; ++k) {
    c.path_of_k.push_back(k % c.P);
    const int64_t n_pairs = k == 2 ? 0 : 1 + static_cast<int64_t>(rng() % 3);  // row 2: no pairs
    for (int64_t q = 0; q < n_pairs; ++q) {
      c.pair_x.push_back(static_cast<int64_t>(rng() % c.I));
      const int64_t n_entries = 1 + static_cast<int64_t>(rng() % 2);
      for (int64_t n = 0; n < n_entries; ++n) {
        c.entry_sh.push_back(static_cast<int64_t>(rng() % c.J));
        c.coeff.push_back(val(rng));
      }
      c.entry_ptr.push_back(static_cast<int64_t>(c.entry_sh.size()));
    }
    c.pair_ptr.push_back(static_cast<int64_t>(c.pair_x.size()));
  }
  return c;
}

// One fp64 problem on random tables: inputs, the edges grouped by receiver and by sender, and the CPU
// kernels' results (the reference of the CUDA kernels). Atom A - 1 (when A > 1) sends nothing, output row
// N - 1 = A receives nothing.
struct Problem {
  Case c;
  int64_t A = 0, N = 0, E = 0, C = 0;
  std::vector<double> w, x, sh, g;
  std::vector<int64_t> snd, rcv, rptr, rorder, sptr, sorder;
  std::vector<double> out, gw, gx, gsh;
};

inline Problem make_problem(uint64_t seed, int64_t A, int64_t E, int64_t C) {
  using namespace nnip_scale::cpu;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  Problem p;
  p.c = random_case(rng);
  const Case& c = p.c;
  p.A = A;
  p.N = A + 1;
  p.E = E;
  p.C = C;
  p.w.resize(E * c.P * C);
  p.x.resize(A * c.I * C);
  p.sh.resize(E * c.J);
  p.g.resize(p.N * c.K * C);
  for (auto* v : {&p.w, &p.x, &p.sh, &p.g})
    for (auto& e : *v) e = val(rng);
  const int64_t senders = A > 1 ? A - 1 : A;
  for (int64_t e = 0; e < E; ++e) {
    p.snd.push_back(static_cast<int64_t>(rng() % senders));
    p.rcv.push_back(static_cast<int64_t>(rng() % A));
  }
  p.rptr.resize(p.N + 1);
  p.rorder.resize(E);
  p.sptr.resize(A + 1);
  p.sorder.resize(E);
  sort_by_key(p.rcv.data(), E, p.N, p.rptr.data(), p.rorder.data());
  sort_by_key(p.snd.data(), E, A, p.sptr.data(), p.sorder.data());
  const nnip_scale::TPTables t = c.tables();
  p.out.resize(p.N * c.K * C);
  p.gw.resize(p.w.size());
  p.gx.resize(p.x.size());
  p.gsh.resize(p.sh.size());
  channelwise_tp_forward<double>(p.w.data(), p.x.data(), p.sh.data(), p.snd.data(), p.rptr.data(), p.rorder.data(), t,
                                 c.coeff.data(), p.out.data(), p.N, c.P, c.I, c.J, C, 1);
  channelwise_tp_backward<double>(p.g.data(), p.w.data(), p.x.data(), p.sh.data(), p.rcv.data(), p.sptr.data(),
                                  p.sorder.data(), t, c.coeff.data(), p.gw.data(), p.gx.data(), p.gsh.data(), A, c.P,
                                  c.I, c.J, C, 1);
  return p;
}
