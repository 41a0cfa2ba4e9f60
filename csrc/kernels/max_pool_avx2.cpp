// AVX2 twin of the 2-D max-pool (kernels.h, MaxPoolArgs). Column strides 1 and 2 run eight
// outputs per vector over the columns where the whole window is inside the plane: stride 1
// reads eight neighbours per tap; stride 2 keeps the max of sixteen neighbours per tap and
// takes the even lanes once at the end (lane 2j of the running max is then output j's
// window), with its own unmasked loop for 2-wide windows. Border columns, and other strides, run the scalar twin's loop. A NaN is tracked
// in its own mask (vmaxps drops a NaN in its first operand) and written back at the end.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// n lanes from p, the rest zero; a full load where eight floats are readable (`room`
// of them are): the lanes past n are then whatever follows, and the callers discard them.
// Masked loads and stores cost several times a plain one on AMD's cores.
inline __m256 load_n(const float* p, int64_t n, int64_t room) {
  if (n >= 8 || room >= 8) return _mm256_loadu_ps(p);
  if (n <= 0) return _mm256_setzero_ps();
  return _mm256_maskload_ps(p, lane_mask(n));
}

// n lanes to p; `spill` allows writing all eight (the floats after p + n are written later).
inline void store_n(float* p, __m256 v, int64_t n, bool spill) {
  if (n >= 8 || spill) {
    _mm256_storeu_ps(p, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int64_t i = 0; i < n; ++i) p[i] = t[i];
}

inline float scalar_window(const PoolGeom& g, const float* x, int64_t ys, int64_t ye, int64_t ox) {
  const int64_t x0 = ox * g.sw - g.pw;
  const int64_t xs = x0 < 0 ? 0 : x0, xe = x0 + g.kw < g.w ? x0 + g.kw : g.w;
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (int64_t iy = ys; iy < ye; ++iy)
    for (int64_t ix = xs; ix < xe; ++ix) {
      const float v = x[iy * g.w + ix];
      m = v > m ? v : m;
      nan |= std::isnan(v);
    }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

// Eight outputs of a 2-wide, stride-2 window (LeNet's and VGG's pools) over `rows` rows
// from p, all sixteen columns of each row readable: per row the max of two vectors, the
// column pairs reduced once at the end, no masks. The general loop above costs about five
// times the instructions on LeNet's planes.
template <int KH>
inline __m256 k2s2(const float* p, int64_t w, int64_t rows) {
  const int64_t nr = KH ? KH : rows;
  __m256 m0 = _mm256_loadu_ps(p), m1 = _mm256_loadu_ps(p + 8);
  __m256 n0 = _mm256_cmp_ps(m0, m0, _CMP_UNORD_Q), n1 = _mm256_cmp_ps(m1, m1, _CMP_UNORD_Q);
  for (int64_t i = 1; i < nr; ++i) {
    const __m256 v0 = _mm256_loadu_ps(p + i * w), v1 = _mm256_loadu_ps(p + i * w + 8);
    n0 = _mm256_or_ps(n0, _mm256_cmp_ps(v0, v0, _CMP_UNORD_Q));
    n1 = _mm256_or_ps(n1, _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, v0);
    m1 = _mm256_max_ps(m1, v1);
  }
  // Lanes 2j and 2j + 1 are output j's two columns: [m0 evens, m1 evens | ...] and odds.
  const __m256 m = _mm256_max_ps(_mm256_shuffle_ps(m0, m1, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(m0, m1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m256 n = _mm256_or_ps(_mm256_shuffle_ps(n0, n1, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm256_shuffle_ps(n0, n1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m256 r = _mm256_blendv_ps(m, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), n);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(r), _MM_SHUFFLE(3, 1, 2, 0)));
}

// The whole plane for 2-wide, stride-2 windows, with the geometry in locals and the
// vector count of each row worked out before its loop: the general loop's per-vector
// bookkeeping cost more than the vector work on LeNet's 12-wide rows.
template <int KH>
void plane_k2s2(const PoolGeom& g, const float* x, float* y, int64_t readable) {
  const int64_t w = g.w, oh = g.oh, ow = g.ow, pw = g.pw, sh = g.sh, ph = g.ph, kh = g.kh, h = g.h;
  const int64_t lo = (pw + 1) / 2;
  int64_t hi = w - 2 + pw >= 0 ? (w - 2 + pw) / 2 + 1 : 0;
  if (hi > ow) hi = ow;
  for (int64_t oy = 0; oy < oh; ++oy) {
    const int64_t y0 = oy * sh - ph;
    const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + kh < h ? y0 + kh : h;
    const int64_t rows = ye - ys;
    float* yrow = y + oy * ow;
    int64_t ox = 0;
    for (; ox < lo && ox < ow; ++ox) yrow[ox] = scalar_window(g, x, ys, ye, ox);
    if (rows >= 1 && (!KH || rows == KH) && ox < hi) {
      const int64_t start = ys * w + 2 * ox - pw;
      // Vectors whose sixteen columns in every row are readable; the last of the plane's
      // rows must not spill its final vector into the next plane.
      int64_t nvec = (hi - ox + 7) / 8;
      const int64_t fit = (readable - start - (rows - 1) * w) / 16;
      if (nvec > fit) nvec = fit > 0 ? fit : 0;
      // Full stores may spill into the rows after this one (written later), not past the plane.
      const bool exact = nvec > 0 && yrow + ox + 8 * nvec > y + oh * ow;
      const int64_t full = exact ? nvec - 1 : nvec;
      const float* p = x + start;
      for (int64_t k = 0; k < full; ++k, p += 16, ox += 8) _mm256_storeu_ps(yrow + ox, k2s2<KH>(p, w, rows));
      if (exact) {
        store_n(yrow + ox, k2s2<KH>(p, w, rows), hi - ox < 8 ? hi - ox : 8, false);
        ox += 8;
      }
      if (ox > hi) ox = hi;
    }
    for (; ox < ow; ++ox) yrow[ox] = scalar_window(g, x, ys, ye, ox);
  }
}

}  // namespace

void max_pool_plane_avx2(const PoolGeom& g, const float* x, float* y, int64_t readable) {
  if (g.sw == 2 && g.kw == 2) {
    if (g.kh == 2 && g.ph == 0) plane_k2s2<2>(g, x, y, readable);
    else plane_k2s2<0>(g, x, y, readable);
    return;
  }
  // Outputs [lo, hi) have their whole window inside the plane's columns.
  int64_t lo = (g.pw + g.sw - 1) / g.sw, hi = g.w - g.kw + g.pw >= 0 ? (g.w - g.kw + g.pw) / g.sw + 1 : 0;
  if (hi > g.ow) hi = g.ow;
  if (lo > hi || g.sw > 2) lo = hi = g.ow;  // no vector part
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 qnan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const int64_t y0 = oy * g.sh - g.ph;
    const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + g.kh < g.h ? y0 + g.kh : g.h;
    float* yrow = y + oy * g.ow;

    for (int64_t ox = 0; ox < lo; ++ox) yrow[ox] = scalar_window(g, x, ys, ye, ox);
    for (int64_t ox0 = lo; ox0 < hi; ox0 += 8) {
      const int64_t cnt = hi - ox0 < 8 ? hi - ox0 : 8;
      const int64_t base = ox0 * g.sw - g.pw;
      __m256 r;
      if (g.sw == 1) {
        __m256 m = neg_inf, nan = _mm256_setzero_ps();
        for (int64_t iy = ys; iy < ye; ++iy)
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t at = iy * g.w + base + kx;
            const __m256 v = load_n(x + at, cnt, readable - at);
            m = _mm256_max_ps(m, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
          }
        r = _mm256_blendv_ps(m, qnan, nan);
      } else {
        // Lanes up to 2 * (cnt - 1) of the sixteen are the windows' columns; read no further.
        const int64_t nv = 2 * cnt - 1;
        __m256 m0 = neg_inf, m1 = neg_inf, n0 = _mm256_setzero_ps(), n1 = _mm256_setzero_ps();
        for (int64_t iy = ys; iy < ye; ++iy)
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t at = iy * g.w + base + kx;
            const __m256 v0 = load_n(x + at, nv, readable - at), v1 = load_n(x + at + 8, nv - 8, readable - at - 8);
            m0 = _mm256_max_ps(m0, v0);
            m1 = _mm256_max_ps(m1, v1);
            n0 = _mm256_or_ps(n0, _mm256_cmp_ps(v0, v0, _CMP_UNORD_Q));
            n1 = _mm256_or_ps(n1, _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q));
          }
        m0 = _mm256_blendv_ps(m0, qnan, n0);
        m1 = _mm256_blendv_ps(m1, qnan, n1);
        // Even lanes of (m0, m1): [m0_0 m0_2 m1_0 m1_2 | m0_4 m0_6 m1_4 m1_6], then 64-bit
        // lanes reordered to put the halves of m0 before those of m1.
        const __m256 s = _mm256_shuffle_ps(m0, m1, _MM_SHUFFLE(2, 0, 2, 0));
        r = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
      }
      // A vector may spill into the rows after it (written later), not past the plane.
      store_n(yrow + ox0, r, cnt, yrow + ox0 + 8 <= y + g.oh * g.ow);
    }
    for (int64_t ox = hi > lo ? hi : lo; ox < g.ow; ++ox) yrow[ox] = scalar_window(g, x, ys, ye, ox);
  }
}

void max_pool2d_avx2(const MaxPoolArgs& a, int nthreads) {
  const int64_t in = a.g.h * a.g.w, out = a.g.oh * a.g.ow;
  for_chunks(nthreads, a.planes, [&](int64_t p) {
    max_pool_plane_avx2(a.g, a.x + p * in, a.y + p * out, (a.planes - p) * in);
  });
}

}  // namespace kernels
}  // namespace deepcomp
