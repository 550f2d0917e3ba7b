// The templated-kernel convention of csrc/, and the torch-free helpers the CPU kernels of every family
// share. No torch headers: the kernels that include this are unit-tested by ctest without libtorch.
//
// The convention (every kernel family under csrc/<family>/ follows it):
//  * Kernels are raw-pointer templates over the scalar type T (float, double), no torch headers.
//    CPU kernels are header-only (<family>/cpu/<family>_kernels.h). CUDA kernels live in
//    <family>/cuda/<family>_kernels.cu behind a torch-free header that declares templated launchers
//    (raw pointers + cudaStream_t), explicitly instantiated for float and double in the .cu.
//  * Layouts are row-major with the channels innermost ([rows, components, C]). CPU kernels run over
//    the channels in blocks of a compile-time width CB = channel_block<T>() (64 bytes: 16 fp32 / 8
//    fp64 values, so a block's partial sums stay in registers) plus one remainder block of width < CB
//    (template flag REM); for_channel_blocks<CB>(C, f) drives the two, so any C works. CUDA kernels
//    put one thread on each channel (coalesced over C).
//  * Deterministic, no float atomics: every output row is written by one thread (CPU) or by one
//    thread per channel (CUDA). Where a row sums contributions of many inputs (edges onto a receiver,
//    atoms onto an element's weights), the inputs are grouped by destination first (sort_by_key: a
//    stable counting sort on CPU; group_by_key in common/cuda_glue.h: a stable device sort on CUDA)
//    and summed in their original order, so a result never depends on the number of threads or the
//    schedule.
//  * Sparse tables (index and coefficient tensors built by the Python plan) are one struct of raw
//    pointers per family, shared by its CPU and CUDA kernels (<family>/tables.h), with a host-side
//    validator that the CPU glue calls on every call (the CUDA glue cannot without a host sync).
//  * The torch glue (<family>/cpu/*_cpu.cpp, <family>/cuda/*_cuda.cpp; the checks both share in
//    <family>/glue.h) does checks -> dtype dispatch -> launch: argument checks whose errors name the
//    op and the argument (common/tensor_checks.h), one dtype dispatch (common/dispatch.h), then the
//    kernel on contiguous data.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// Table helpers that CPU and CUDA kernels share are compiled for both (nvcc defines __CUDACC__).
#ifdef __CUDACC__
#define NNIP_HOST_DEVICE __host__ __device__
#else
#define NNIP_HOST_DEVICE
#endif

#ifdef _OPENMP
#define NNIP_SIMD _Pragma("omp simd")
#else
#define NNIP_SIMD
#endif

namespace nnip_scale {
namespace cpu {

// The channel block width CB of the CPU kernels: 64 bytes of T.
template <typename T>
constexpr int64_t channel_block() {
  return static_cast<int64_t>(64 / sizeof(T));
}

// Calls f(std::false_type{}, u0, CB) for every full block of CB channels and f(std::true_type{}, u0, cw)
// for the remainder block (cw = C - u0 < CB), if any. The first argument is the kernel's REM flag:
//   for_channel_blocks<CB>(C, [&](auto rem, int64_t u0, int64_t cw) { block<T, CB, decltype(rem)::value>(...); });
template <int64_t CB, typename F>
inline void for_channel_blocks(int64_t C, F&& f) {
  int64_t u0 = 0;
  for (; u0 + CB <= C; u0 += CB) f(std::false_type{}, u0, CB);
  if (u0 < C) f(std::true_type{}, u0, C - u0);
}

// Threads for one call of `work` multiply-adds: serial below min_work, where starting the OpenMP team
// costs more than the work. Which thread owns which row never changes a result.
inline int parallel_threads(int n_threads, int64_t work, int64_t min_work) {
  if (n_threads < 1 || work < min_work) return 1;
  return n_threads;
}

// (thread id, team size) of the calling thread inside an OpenMP parallel region; (0, 1) without OpenMP.
inline std::pair<int, int> team_position() {
#ifdef _OPENMP
  return {omp_get_thread_num(), omp_get_num_threads()};
#else
  return {0, 1};
#endif
}

// Number of index entries outside [0, n) (0 means the index is valid).
inline int64_t count_invalid_index(const int64_t* index, int64_t E, int64_t n, int n_threads) {
  int64_t bad = 0;
#ifdef _OPENMP
#pragma omp parallel for reduction(+ : bad) num_threads(n_threads) schedule(static) if (E > 32768)
#endif
  for (int64_t e = 0; e < E; ++e) bad += (index[e] < 0 || index[e] >= n) ? 1 : 0;
  (void)n_threads;
  return bad;
}

// Stable counting sort of E items by key (values in [0, n), already validated): ptr [n + 1] gets the
// segment offsets, order [E] the item ids grouped by key, in increasing id within a key.
inline void sort_by_key(const int64_t* key, int64_t E, int64_t n, int64_t* ptr, int64_t* order) {
  std::fill(ptr, ptr + n + 1, int64_t{0});
  for (int64_t e = 0; e < E; ++e) ++ptr[key[e] + 1];
  for (int64_t i = 0; i < n; ++i) ptr[i + 1] += ptr[i];
  std::vector<int64_t> next(ptr, ptr + n);
  for (int64_t e = 0; e < E; ++e) order[next[key[e]]++] = e;
}

// The item at position p of a grouping: order[p], or p itself when order is nullptr (items already
// sorted by key; see segments_of_grouped).
inline int64_t item_at(const int64_t* order, int64_t p) { return order ? order[p] : p; }

// Segment offsets of E items that are already grouped by key: the items order[0], order[1], ... (the
// items themselves when order is nullptr) must have keys in [0, n), ascending, and increasing item ids
// within a key (exactly what sort_by_key makes; order, when given, must hold item ids in [0, E)). With
// those, each id occurs once, so order is a permutation. Fills ptr [n + 1] and returns -1, or returns
// the first position p at which the grouping fails (ptr is then partly written). One sequential pass:
// what a batch sorted once in the collate (edges by receiver, and the permutation to sender order)
// costs a kernel instead of a sort.
inline int64_t segments_of_grouped(const int64_t* key, const int64_t* order, int64_t E, int64_t n, int64_t* ptr) {
  int64_t cur = -1, prev = -1;
  for (int64_t p = 0; p < E; ++p) {
    const int64_t e = order ? order[p] : p;
    if (e < 0 || e >= E) return p;
    const int64_t k = key[e];
    if (k < 0 || k >= n || k < cur || (k == cur && e <= prev)) return p;
    while (cur < k) ptr[++cur] = p;
    prev = e;
  }
  while (cur < n) ptr[++cur] = E;
  return -1;
}

// Software prefetch of n values starting at p (rows visited in an order the hardware prefetcher
// cannot guess, e.g. gathered by sender or receiver).
template <typename T>
inline void prefetch_row(const T* p, int64_t n, bool for_write = false) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  if (for_write) {
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 1, 3);
  } else {
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 3);
  }
#else
  (void)p;
  (void)n;
  (void)for_write;
#endif
}

// Items ahead of the current one whose rows are prefetched.
constexpr int64_t kPrefetchDistance = 2;

}  // namespace cpu
}  // namespace nnip_scale
