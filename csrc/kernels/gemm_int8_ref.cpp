// Scalar reference for the int8 GEMM: exact int32 dot products of 7-bit activations
// with int8 weights, then one fused multiply-add per output (fmaf, exactly rounded, so
// the AVX2 twin's _mm256_fmadd_ps gives the same bits).
#include <math.h>
#include <cstdint>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void int8_quantize_row_ref(const float* x, int64_t k, float inv_scale, int32_t zp, uint8_t* q) {
  const int64_t kp = (k + 3) / 4 * 4;
  for (int64_t i = 0; i < k; ++i) {
    // nearbyint rounds half to even, as _mm256_cvtps_epi32 does.
    int32_t v = static_cast<int32_t>(::nearbyintf(x[i] * inv_scale)) + zp;
    v = v < 0 ? 0 : (v > 127 ? 127 : v);
    q[i] = static_cast<uint8_t>(v);
  }
  for (int64_t i = k; i < kp; ++i) q[i] = 0;
}

void gemm_int8_ref(const Int8Args& a, int nthreads) {
  const int64_t kp = (a.k + 3) / 4 * 4;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(dynamic, 8)
  for (int64_t o = 0; o < a.n; ++o) {
    // Weight (o, i) sits at byte (o % 8) * 4 + i % 4 of the 32-byte group (o / 8, i / 4).
    const int8_t* w = a.packed + (o / 8) * (kp / 4) * 32 + (o % 8) * 4;
    const float bias = a.bias ? a.bias[o] : 0.0f;
    for (int64_t b = 0; b < a.batch; ++b) {
      const uint8_t* xq = a.xq + b * kp;
      int32_t acc = 0;
      for (int64_t i = 0; i < a.k; ++i) acc += static_cast<int32_t>(xq[i]) * static_cast<int32_t>(w[(i / 4) * 32 + i % 4]);
      const int32_t centred = acc - a.x_zp[b] * a.row_sums[o];
      float out = ::fmaf(static_cast<float>(centred), a.x_scale[b] * a.w_scale[o], bias);
      if (a.relu) out = out > 0.0f ? out : 0.0f;
      a.y[b * a.n + o] = out;
    }
  }
}

}  // namespace kernels
}  // namespace deepcomp
