// Scalar reference of the 2-D max-pool (kernels.h, MaxPoolArgs): the window clipped to the
// plane, a NaN kept once seen (PyTorch's rule: take v when v > m or v is NaN).
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void max_pool_plane_ref(const PoolGeom& g, const float* x, float* y) {
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const int64_t y0 = oy * g.sh - g.ph;
    const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + g.kh < g.h ? y0 + g.kh : g.h;
    for (int64_t ox = 0; ox < g.ow; ++ox) {
      const int64_t x0 = ox * g.sw - g.pw;
      const int64_t xs = x0 < 0 ? 0 : x0, xe = x0 + g.kw < g.w ? x0 + g.kw : g.w;
      // The max and "saw a NaN" kept apart, so that neither needs a branch: on real data
      // "is this the new max" is a coin toss, and a mispredicted branch per element made
      // this loop 10x slower.
      float m = -std::numeric_limits<float>::infinity();
      bool nan = false;
      for (int64_t iy = ys; iy < ye; ++iy)
        for (int64_t ix = xs; ix < xe; ++ix) {
          const float v = x[iy * g.w + ix];
          m = v > m ? v : m;
          nan |= std::isnan(v);
        }
      y[oy * g.ow + ox] = nan ? std::numeric_limits<float>::quiet_NaN() : m;
    }
  }
}

void max_pool2d_ref(const MaxPoolArgs& a, int nthreads) {
  const int64_t in = a.g.h * a.g.w, out = a.g.oh * a.g.ow;
  for_chunks(nthreads, a.planes, [&](int64_t p) { max_pool_plane_ref(a.g, a.x + p * in, a.y + p * out); });
}

}  // namespace kernels
}  // namespace deepcomp
