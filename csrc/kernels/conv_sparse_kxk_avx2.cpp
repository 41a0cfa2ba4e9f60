// AVX2 + FMA twin of the direct sparse KxK convolution (kernels.h, ConvSparseArgs). Each
// image is first copied, zero padded, into sw column phases (padded column cc of a row
// goes to phase cc % sw at cc / sw), so that output column ox of tap (ky, kx) reads
// position ox + kx / sw of phase kx % sw: contiguous in ox for every stride, and no
// border tests in the inner loop. Then per output channel and output row, up to four
// vectors of outputs stay in registers while the row's nonzeros stream past: one
// broadcast and one FMA per nonzero and vector. ymm only: at the sizes this path wins
// (small images, few channels) a zmm row would be mostly masked lanes.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline __m256 act_v(__m256 v, int32_t act) {
  const __m256 z = _mm256_setzero_ps();
  switch (act) {
    case kActRelu: return _mm256_max_ps(v, z);
    case kActRelu6: return _mm256_min_ps(_mm256_max_ps(v, z), _mm256_set1_ps(6.0f));
    case kActHardswish: {
      const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, _mm256_set1_ps(3.0f)), z), _mm256_set1_ps(6.0f));
      return _mm256_div_ps(_mm256_mul_ps(v, t), _mm256_set1_ps(6.0f));
    }
    default: return v;
  }
}

struct Geom {
  int64_t hp, wq, plane;  // padded rows, phase row width, floats per channel (all phases)
};

// R output rows (row_step floats apart in the phase buffer) by NV vectors of outputs
// (NV * 8 columns from ox0): R * NV independent FMA chains, so that narrow rows (LeNet's
// 8 columns) do not wait on one chain's latency. Each output still sums the row's
// nonzeros in storage order.
template <int NV, int R>
inline void row_block(const float* xp, int64_t row_step, const int64_t* off, const float* val, int64_t p0,
                      int64_t p1, int64_t ox0, int64_t width, float b, int32_t act, float* yrow, int64_t ow) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < NV; ++u) acc[r][u] = _mm256_setzero_ps();
  for (int64_t p = p0; p < p1; ++p) {
    const __m256 v = _mm256_set1_ps(val[p]);
    const float* s = xp + off[p] + ox0;
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < NV; ++u) acc[r][u] = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + r * row_step + 8 * u), acc[r][u]);
  }
  const __m256 bv = _mm256_set1_ps(b);
  for (int r = 0; r < R; ++r) {
    for (int u = 0; u < NV; ++u) {
      const __m256 y = act_v(_mm256_add_ps(acc[r][u], bv), act);
      const int64_t left = width - 8 * u;
      float* dst = yrow + r * ow + ox0 + 8 * u;
      if (left >= 8) _mm256_storeu_ps(dst, y);
      else _mm256_maskstore_ps(dst, lane_mask(left), y);
    }
  }
}

void fill_phases(const ConvSparseArgs& a, const Geom& g, const float* x, float* xp) {
  for (int64_t ch = 0; ch < a.c; ++ch) {
    for (int64_t r = 0; r < g.hp; ++r) {
      const int64_t iy = r - a.ph;
      if (iy < 0 || iy >= a.h) continue;  // stays zero (calloc)
      const float* src = x + (ch * a.h + iy) * a.w;
      float* row = xp + ch * g.plane + r * a.sw * g.wq;
      if (a.sw == 1) {
        std::memcpy(row + a.pw, src, static_cast<size_t>(a.w) * sizeof(float));
        continue;
      }
      for (int64_t ix = 0; ix < a.w; ++ix) {
        const int64_t cc = ix + a.pw;
        row[(cc % a.sw) * g.wq + cc / a.sw] = src[ix];
      }
    }
  }
}

}  // namespace

void conv_sparse_kxk_avx2(const ConvSparseArgs& a, int nthreads) {
  const int64_t nnz = a.indptr[a.c_out];
  Geom g;
  g.hp = a.h + 2 * a.ph;
  const int64_t wp = a.w + 2 * a.pw;
  const int64_t ow8 = (a.ow + 7) / 8 * 8;
  const int64_t need = ow8 + (a.kw - 1) / a.sw;  // reads of the last vector of a row
  const int64_t wide = (wp + a.sw - 1) / a.sw;
  g.wq = need > wide ? need : wide;
  g.plane = g.hp * a.sw * g.wq;
  const int64_t taps = a.kh * a.kw;
  int64_t* off = static_cast<int64_t*>(std::malloc(static_cast<size_t>(nnz > 0 ? nnz : 1) * sizeof(int64_t)));
  float* val = static_cast<float*>(std::malloc(static_cast<size_t>(nnz > 0 ? nnz : 1) * sizeof(float)));
  float* xp = static_cast<float*>(std::calloc(static_cast<size_t>(a.c * g.plane + 8), sizeof(float)));
  if (!off || !val || !xp) {  // out of memory: the reference needs no scratch
    std::free(off);
    std::free(val);
    std::free(xp);
    conv_sparse_kxk_ref(a, nthreads);
    return;
  }
  // Each nonzero's offset in the phase buffer, once per call. Integer division costs more
  // than the whole convolution of a LeNet layer (thousands of nonzeros, a few FMAs each),
  // so the channel comes from a reciprocal (corrected by one either way) and the tap from
  // a table of the kh * kw in-channel offsets.
  int64_t* tap_off = static_cast<int64_t*>(std::malloc(static_cast<size_t>(taps) * sizeof(int64_t)));
  if (!tap_off) {
    std::free(off);
    std::free(val);
    std::free(xp);
    conv_sparse_kxk_ref(a, nthreads);
    return;
  }
  for (int64_t t = 0; t < taps; ++t) {
    const int64_t ky = t / a.kw, kx = t % a.kw;
    tap_off[t] = (ky * a.sw + kx % a.sw) * g.wq + kx / a.sw;
  }
  const double inv_taps = 1.0 / static_cast<double>(taps);
  for (int64_t p = 0; p < nnz; ++p) {
    const int64_t col = a.idx16 ? static_cast<int64_t>(a.idx16[p]) : static_cast<int64_t>(a.idx32[p]);
    int64_t ch = static_cast<int64_t>(static_cast<double>(col) * inv_taps);
    if (ch * taps > col) --ch;
    else if ((ch + 1) * taps <= col) ++ch;
    off[p] = ch * g.plane + tap_off[col - ch * taps];
    val[p] = a.codes ? a.codebook[a.codes[p]] : a.values[p];
  }
  std::free(tap_off);
  const int64_t row_step = a.sh * a.sw * g.wq;
  for (int64_t i = 0; i < a.n; ++i) {
    if (i) std::memset(xp, 0, static_cast<size_t>(a.c * g.plane) * sizeof(float));
    fill_phases(a, g, a.x + i * a.c * a.h * a.w, xp);
    for_chunks(nthreads, a.c_out, [&](int64_t o) {
      // With a fused pool the plane goes to this thread's scratch (in L1 for LeNet's
      // 24x24), and only its pooled form to a.y.
      float* y = a.pool ? pool_scratch(a.oh * a.ow) : a.y + (i * a.c_out + o) * a.oh * a.ow;
      const int64_t p0 = a.indptr[o], p1 = a.indptr[o + 1];
      const float b = a.bias ? a.bias[o] : 0.0f;
      for (int64_t ox0 = 0; ox0 < a.ow; ox0 += 32) {
        const int64_t width = a.ow - ox0 < 32 ? a.ow - ox0 : 32;
        const int nv = static_cast<int>((width + 7) / 8);
        // Rows per block: eight accumulators (FMA chains) in flight, 9 of 16 ymm registers;
        // every nonzero's broadcast and offset serve all of them.
        const int64_t rows = nv == 1 ? 8 : nv == 2 ? 4 : 2;
        int64_t oy = 0;
        for (; oy + rows <= a.oh; oy += rows) {
          const float* xrow = xp + oy * row_step;
          float* yrow = y + oy * a.ow;
          switch (nv) {
            case 1: row_block<1, 8>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            case 2: row_block<2, 4>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            case 3: row_block<3, 2>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            default: row_block<4, 2>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
          }
        }
        for (; oy < a.oh; ++oy) {  // the rows left over from the blocks
          const float* xrow = xp + oy * row_step;
          float* yrow = y + oy * a.ow;
          switch (nv) {
            case 1: row_block<1, 1>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            case 2: row_block<2, 1>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            case 3: row_block<3, 1>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
            default: row_block<4, 1>(xrow, row_step, off, val, p0, p1, ox0, width, b, a.act, yrow, a.ow); break;
          }
        }
      }
      if (a.pool)
        max_pool_plane_avx2(*a.pool, y, a.y + (i * a.c_out + o) * a.pool->oh * a.pool->ow,
                            a.oh * a.ow + kPoolScratchSlack);
    });
  }
  std::free(off);
  std::free(val);
  std::free(xp);
}

}  // namespace kernels
}  // namespace deepcomp
