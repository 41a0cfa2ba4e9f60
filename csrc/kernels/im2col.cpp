// im2col for Conv2d (groups = 1): one row per output pixel, so a convolution becomes
// cols @ W.T with W the [out, c * kh * kw] view of the weight, and runs on the same
// sparse / int8 kernels as a Linear layer. A copy, bandwidth bound: no SIMD twin.
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace deepcomp {
namespace kernels {

void im2col(const float* x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t oh, int64_t ow, float* cols) {
  const int64_t patch = c * kh * kw;
  const int nthreads = threads_for(static_cast<double>(n * oh * ow * patch) / 4.0);
#pragma omp parallel for collapse(2) num_threads(nthreads) if (nthreads > 1) schedule(static)
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t oy = 0; oy < oh; ++oy) {
      const float* xi = x + img * c * h * w;
      for (int64_t ox = 0; ox < ow; ++ox) {
        float* dst = cols + ((img * oh + oy) * ow + ox) * patch;
        const int64_t ix0 = ox * sw - pw;
        for (int64_t ch = 0; ch < c; ++ch) {
          for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t iy = oy * sh - ph + ky;
            float* d = dst + (ch * kh + ky) * kw;
            if (iy < 0 || iy >= h) {
              std::memset(d, 0, sizeof(float) * kw);
              continue;
            }
            const float* row = xi + (ch * h + iy) * w;
            if (ix0 >= 0 && ix0 + kw <= w) {
              std::memcpy(d, row + ix0, sizeof(float) * kw);
            } else {
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ix0 + kx;
                d[kx] = (ix >= 0 && ix < w) ? row[ix] : 0.0f;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace kernels
}  // namespace deepcomp
