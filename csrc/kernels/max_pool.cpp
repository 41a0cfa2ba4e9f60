// Run-time choice between the AVX2 and scalar twins of the max-pool, and its thread count
// (threads.cpp's units: a compare of eight lanes with its load is about one).
#include <vector>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

float* pool_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n + kPoolScratchSlack) buf.resize(static_cast<size_t>(n + kPoolScratchSlack));
  return buf.data();
}

void max_pool2d(const MaxPoolArgs& a) {
  if (a.planes == 0 || a.g.oh <= 0 || a.g.ow <= 0) return;
  const double work = static_cast<double>(a.planes) * static_cast<double>(a.g.oh) *
                      static_cast<double>((a.g.ow + 7) / 8) * static_cast<double>(a.g.kh * a.g.kw);
  const int nt = threads_for(work);
  if (active_isa() == Isa::Avx2) max_pool2d_avx2(a, nt);
  else max_pool2d_ref(a, nt);
}

}  // namespace kernels
}  // namespace deepcomp
