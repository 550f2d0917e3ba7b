// Runs the device code of csrc/<family>/cuda/*_kernels.cu on the host, so the C++ tests check its math
// and indexing against the CPU kernels on machines without a GPU (an <family>/tests/test_cuda_*_emulated.cpp
// includes this header first, then the .cu itself, with csrc/tests/emulation/ on the include path for
// the fake <cuda_runtime_api.h>).
//
// What it models: blocks run one after another; the threads of a block run concurrently, one host
// thread each, so __syncthreads() is a real barrier and the block's dynamic shared memory (`smem_raw`,
// the name every kernel gives its `extern __shared__` array; kernels live in the anonymous namespace
// of nnip_scale::cuda) is really shared. A thread that returns while others of its block wait at a
// barrier is reported (a deadlock or undefined behaviour on a GPU) and aborts the test. Not modelled:
// warps (no shuffles or warp votes), atomics, streams; the .cu's launchers are left out
// (NNIP_CUDA_EMULATION), the test calls the __global__ functions through emulate_launch.
#pragma once
#define NNIP_CUDA_EMULATION

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_runtime_api.h"

struct EmuDim {
  unsigned x = 0;
};
inline thread_local EmuDim threadIdx;      // per emulated thread
inline EmuDim blockIdx, blockDim, gridDim;  // shared by the threads of the running block

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

namespace nnip_scale {
namespace cuda {
namespace emulation {

// The barrier of the running block: all its live threads must arrive before any leaves.
class BlockBarrier {
 public:
  explicit BlockBarrier(unsigned n) : live_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned gen = gen_;
    if (++waiting_ == live_) {
      release();
      return;
    }
    cv_.wait(lock, [&] { return gen != gen_; });
  }
  // A thread returned from the kernel: an error if others wait for it at a barrier.
  void exit() {
    std::lock_guard<std::mutex> lock(m_);
    --live_;
    if (waiting_ > 0) {
      std::fprintf(stderr, "CUDA emulation: a thread of block %u returned while %u others wait at __syncthreads\n",
                   blockIdx.x, waiting_);
      std::abort();
    }
  }

 private:
  void release() {
    waiting_ = 0;
    ++gen_;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  unsigned live_, waiting_ = 0, gen_ = 0;
};

inline BlockBarrier*& current_barrier() {
  static BlockBarrier* b = nullptr;
  return b;
}

}  // namespace emulation

namespace {
alignas(64) unsigned char smem_raw[1 << 18];  // the dynamic shared memory of the running block
}  // namespace
}  // namespace cuda
}  // namespace nnip_scale

inline void __syncthreads() { nnip_scale::cuda::emulation::current_barrier()->wait(); }

// kernel() on a grid of `blocks` blocks of `threads` threads (blockIdx/threadIdx set as on a GPU).
template <typename F>
void emulate_launch(unsigned blocks, unsigned threads, F kernel) {
  using nnip_scale::cuda::emulation::BlockBarrier;
  blockDim.x = threads;
  gridDim.x = blocks;
  for (unsigned b = 0; b < blocks; ++b) {
    blockIdx.x = b;
    BlockBarrier barrier(threads);
    nnip_scale::cuda::emulation::current_barrier() = &barrier;
    std::vector<std::thread> team;
    team.reserve(threads);
    for (unsigned t = 0; t < threads; ++t)
      team.emplace_back([&, t] {
        threadIdx.x = t;
        kernel();
        barrier.exit();
      });
    for (auto& th : team) th.join();
    nnip_scale::cuda::emulation::current_barrier() = nullptr;
  }
}

// A grid-stride kernel over `total` items on at most 3 blocks of `threads`, so its loops wrap.
template <typename F>
void emulate_grid_stride(int64_t total, unsigned threads, F kernel) {
  int64_t blocks = (total + threads - 1) / threads;
  blocks = blocks < 1 ? 1 : (blocks > 3 ? 3 : blocks);
  emulate_launch(static_cast<unsigned>(blocks), threads, kernel);
}
