// Run-time choice for the codebook GEMM (lut_gemm): the AVX2 twin (which itself takes its
// zmm variant where AVX-512 is usable) or the scalar one, and the thread count.
#include <atomic>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {
std::atomic<bool> g_allow_vbmi{true};
}

void set_lut_vbmi(bool allow) { g_allow_vbmi.store(allow, std::memory_order_relaxed); }
bool lut_vbmi_allowed() { return g_allow_vbmi.load(std::memory_order_relaxed); }

void lut_gemm(const LutArgs& a) {
  if (a.batch <= 0 || a.n <= 0) return;
  // Decoding costs about one unit per weight, and each batch row adds a sixteenth of it
  // in FMAs (threads.cpp's units).
  const double weights = static_cast<double>(a.n) * static_cast<double>(a.k);
  const int nt = threads_for(weights * (1.0 + static_cast<double>(a.batch) / 16.0));
#if defined(DEEPCOMP_HAVE_AVX2_TU)
  if (active_isa() == Isa::Avx2) {
    lut_gemm_avx2(a, nt);
    return;
  }
#endif
  lut_gemm_ref(a, nt);
}

void lut_decode(const LutArgs& a) {
  if (a.n <= 0 || a.k <= 0) return;
  const int nt = threads_for(static_cast<double>(a.n) * static_cast<double>(a.k));
#if defined(DEEPCOMP_HAVE_AVX2_TU)
  if (active_isa() == Isa::Avx2) {
    lut_decode_avx2(a, nt);
    return;
  }
#endif
  lut_decode_ref(a, nt);
}

}  // namespace kernels
}  // namespace deepcomp
