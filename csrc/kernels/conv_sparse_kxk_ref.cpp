// Scalar reference of the direct sparse KxK convolution (kernels.h, ConvSparseArgs): what a
// CPU without AVX2 runs and what the tests hold the vector twin against. One accumulator
// per output, the row's nonzeros summed in storage order, then the bias, then the
// activation; the vector twin does the same per lane with FMA (rounding differs only).
#include <cstdint>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void conv_sparse_kxk_ref(const ConvSparseArgs& a, int nthreads) {
  const int64_t taps = a.kh * a.kw;
  // One chunk per (image, output channel): each output is summed by one thread in a
  // fixed order, so results do not depend on the thread count.
  for_chunks(nthreads, a.n * a.c_out, [&](int64_t t) {
    const int64_t i = t / a.c_out, o = t % a.c_out;
    const float* x = a.x + i * a.c * a.h * a.w;
    float* y = a.pool ? pool_scratch(a.oh * a.ow) : a.y + (i * a.c_out + o) * a.oh * a.ow;
    const int64_t p0 = a.indptr[o], p1 = a.indptr[o + 1];
    const float b = a.bias ? a.bias[o] : 0.0f;
    for (int64_t oy = 0; oy < a.oh; ++oy) {
      for (int64_t ox = 0; ox < a.ow; ++ox) {
        float acc = 0.0f;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t col = a.idx16 ? static_cast<int64_t>(a.idx16[p]) : static_cast<int64_t>(a.idx32[p]);
          const int64_t ch = col / taps, ky = (col / a.kw) % a.kh, kx = col % a.kw;
          const int64_t iy = oy * a.sh + ky - a.ph, ix = ox * a.sw + kx - a.pw;
          if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) continue;
          const float v = a.codes ? a.codebook[a.codes[p]] : a.values[p];
          acc += v * x[(ch * a.h + iy) * a.w + ix];
        }
        y[oy * a.ow + ox] = act_scalar(acc + b, a.act);
      }
    }
    if (a.pool) max_pool_plane_ref(*a.pool, y, a.y + (i * a.c_out + o) * a.pool->oh * a.pool->ow);
  });
}

}  // namespace kernels
}  // namespace deepcomp
