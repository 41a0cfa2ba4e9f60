// The kernels' own thread count. Kept apart from omp_set_num_threads so that a torch
// loaded in the same process (possibly on the same OpenMP runtime) is unaffected.
#include <omp.h>

#include <atomic>

#include "kernels/kernels.h"

namespace deepcomp {
namespace kernels {

namespace {
std::atomic<int> g_threads{0};  // 0: not set yet, use OpenMP's default

// Below this much work (in units of about 0.3 ns of one thread's time: a sparse
// nonzero at batch 1, 32 int8 multiply-adds) a parallel region costs more than the
// second thread saves. Measured on the 2-vCPU VM with passive waiting: waking and joining
// the team costs 0.1-0.2 ms there, so 1000x4096 at 90% (0.4 M units) ran slower on two
// threads and 4096x4096 (1.9 M units) faster.
std::atomic<double> g_min_work{1.5e6};
}  // namespace

void set_parallel_min_work(double work) { g_min_work.store(work < 0 ? 0 : work, std::memory_order_relaxed); }
double parallel_min_work() { return g_min_work.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = omp_get_max_threads();
    if (n < 1) n = 1;
  }
  return n;
}

int threads_for(double work) { return work < parallel_min_work() ? 1 : get_num_threads(); }

}  // namespace kernels
}  // namespace deepcomp
