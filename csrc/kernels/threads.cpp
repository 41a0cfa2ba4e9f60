// The kernels' own thread count. Kept apart from omp_set_num_threads so that a torch
// loaded in the same process (possibly on the same OpenMP runtime) is unaffected.
#include <omp.h>

#include <atomic>

#include "kernels/kernels.h"

namespace deepcomp {
namespace kernels {

namespace {
std::atomic<int> g_threads{0};  // 0: not set yet, use OpenMP's default

// Below this many multiply-adds a parallel region (wake-up and join, ~10-50 us with
// passive waiting) costs more than the second thread saves.
constexpr double kParallelWork = 256.0 * 1024.0;
}  // namespace

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = omp_get_max_threads();
    if (n < 1) n = 1;
  }
  return n;
}

int threads_for(double work) { return work < kParallelWork ? 1 : get_num_threads(); }

}  // namespace kernels
}  // namespace deepcomp
