// Run-time choice between the vector (ymm / zmm) and scalar twins of the depthwise and
// sparse 1x1 convolutions, and their thread counts (threads.cpp's work units: about
// 0.3 ns of one thread, i.e. one vector FMA with its loads).
#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void depthwise_conv2d(const DepthwiseArgs& a) {
  if (a.n == 0 || a.c == 0 || a.oh <= 0 || a.ow <= 0) return;
  const double taps = static_cast<double>(a.n * a.c) * static_cast<double>(a.oh * a.ow) *
                      static_cast<double>(a.kh * a.kw);
  const int nt = threads_for(taps / 8.0);
  if (active_isa() == Isa::Avx2) depthwise_avx2(a, nt, avx512_usable(false));
  else depthwise_ref(a, nt);
}

void conv1x1_sparse(const Conv1x1Args& a) {
  if (a.n == 0 || a.c_out == 0 || a.hw == 0) return;
  const double work = static_cast<double>(a.indptr[a.c_out]) * static_cast<double>(a.n * a.hw) / 8.0 +
                      static_cast<double>(a.n * a.c_out * a.hw) / 8.0;
  const int nt = threads_for(work);
  if (active_isa() == Isa::Avx2) conv1x1_sparse_avx2(a, nt, avx512_usable(false));
  else conv1x1_sparse_ref(a, nt);
}

}  // namespace kernels
}  // namespace deepcomp
