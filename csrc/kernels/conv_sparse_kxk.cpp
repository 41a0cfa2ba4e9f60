// Run-time choice between the AVX2 and scalar twins of the direct sparse KxK convolution,
// and its thread count (threads.cpp's work units: about one vector FMA with its loads).
#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void conv_sparse_kxk(const ConvSparseArgs& a) {
  if (a.n == 0 || a.c_out == 0 || a.oh <= 0 || a.ow <= 0) return;
  const double work = static_cast<double>(a.indptr[a.c_out]) * static_cast<double>(a.n * a.oh) *
                      static_cast<double>((a.ow + 7) / 8);
  const int nt = threads_for(work);
  if (active_isa() == Isa::Avx2) conv_sparse_kxk_avx2(a, nt);
  else conv_sparse_kxk_ref(a, nt);
}

}  // namespace kernels
}  // namespace deepcomp
