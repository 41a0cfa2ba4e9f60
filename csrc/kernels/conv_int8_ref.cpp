// Scalar reference for the int8 direct convolution: the quantized image in a plain
// zero-point-padded [c][h + 2 ph][w + 2 pw] buffer, one exact int32 dot product per
// output, then one fused multiply-add (fmaf, exactly rounded, as the SIMD twins'
// vfmadd). Deliberately independent of the SIMD paths' blocked layout, so that the tests
// comparing them check that layout too.
#include <math.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

struct RefCtx {
  const ConvInt8Args* a;
  const uint8_t* img;  // [n][c][hp][wp]
  int64_t hp, wp;
  const float* x_scale;
  const int32_t* x_zp;
};

void ref_chunk(void* p, int64_t chunk) {
  const RefCtx& r = *static_cast<const RefCtx*>(p);
  const ConvInt8Args& a = *r.a;
  const int64_t b = chunk / a.o, o = chunk % a.o;
  const int64_t c4 = (a.c + 3) / 4, taps = a.kh * a.kw;
  const uint8_t* img = r.img + b * a.c * r.hp * r.wp;
  const int8_t* wblk = a.packed + (o / 8) * c4 * taps * 32 + (o % 8) * 4;
  const float scale = r.x_scale[b] * a.w_scale[o];
  const int32_t corr = r.x_zp[b] * a.row_sums[o];
  const float bias = a.bias ? a.bias[o] : 0.0f;
  float* y = a.y + (b * a.o + o) * a.oh * a.ow;
  for (int64_t oy = 0; oy < a.oh; ++oy) {
    for (int64_t ox = 0; ox < a.ow; ++ox) {
      int32_t acc = 0;
      for (int64_t ky = 0; ky < a.kh; ++ky) {
        for (int64_t kx = 0; kx < a.kw; ++kx) {
          const int8_t* wt = wblk + (ky * a.kw + kx) * 32;
          const uint8_t* px = img + (oy * a.sh + ky) * r.wp + ox * a.sw + kx;
          for (int64_t ch = 0; ch < a.c; ++ch)
            acc += static_cast<int32_t>(px[ch * r.hp * r.wp]) * static_cast<int32_t>(wt[(ch / 4) * taps * 32 + ch % 4]);
        }
      }
      float out = ::fmaf(static_cast<float>(acc - corr), scale, bias);
      if (a.relu) out = out > 0.0f ? out : 0.0f;
      y[oy * a.ow + ox] = out;
    }
  }
}

}  // namespace

void conv_int8_ref(const ConvInt8Args& a, const float* x_scale, const float* x_inv, const int32_t* x_zp,
                   int nthreads) {
  const int64_t hp = a.h + 2 * a.ph, wp = a.w + 2 * a.pw;
  const int64_t chw = a.c * a.h * a.w;
  std::vector<uint8_t> img(static_cast<size_t>(a.n * a.c * hp * wp));
  std::vector<uint8_t> q(static_cast<size_t>((chw + 3) / 4 * 4));
  for (int64_t b = 0; b < a.n; ++b) {
    int8_quantize_row_ref(a.x + b * chw, chw, x_inv[b], x_zp[b], q.data());
    uint8_t* dst = img.data() + b * a.c * hp * wp;
    std::memset(dst, static_cast<int>(x_zp[b]), static_cast<size_t>(a.c * hp * wp));
    for (int64_t ch = 0; ch < a.c; ++ch)
      for (int64_t iy = 0; iy < a.h; ++iy)
        std::memcpy(dst + (ch * hp + iy + a.ph) * wp + a.pw, q.data() + (ch * a.h + iy) * a.w, static_cast<size_t>(a.w));
  }
  RefCtx r{&a, img.data(), hp, wp, x_scale, x_zp};
  parallel_chunks(nthreads, a.n * a.o, ref_chunk, &r);
}

}  // namespace kernels
}  // namespace deepcomp
