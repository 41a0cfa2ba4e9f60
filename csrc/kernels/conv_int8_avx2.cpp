// int8 direct convolution on AVX2 (maddubs) and AVX512-VNNI (vpdpbusd on zmm), without
// im2col. Output pixels sit in vector lanes, so that a result vector is a run of pixels
// of one output channel: the epilogue writes NCHW directly.
//
// Layout of the quantized input, built once per call: for each image, each group of 4
// input channels and each stride phase (py, px), a plane of 4-byte cells (the group's 4
// channels of one pixel) holding the padded pixels (py + sh * r, px + sw * s) at cell
// r * ws + s, padding and slack filled with the image's zero point. Output pixel
// (oy, ox) is taken as the "virtual" pixel p = oy * ws + ox; for tap (ky, kx) it reads
// cell p + (ky / sh) * ws + kx / sw of phase (ky % sh, kx % sw). That cell index is the
// same affine function of p for every output pixel, so 16 (or 8) consecutive virtual
// pixels read one contiguous 64 (32) bytes for any stride, row ends included; virtual
// pixels with ox >= ow are computed and dropped (a few % of the work: ws = ow + 1 or 2
// on ResNet's layers). Sums are the exact integers of the scalar twin.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

inline int32_t round_to_int(float v) { return _mm_cvtss_si32(_mm_set_ss(v)); }  // half to even

inline int32_t load_i32(const void* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

struct Geometry {
  int64_t c4, taps, nph, hp, wp, hs, ws, vp, ps;
  int64_t img_bytes;  // one image's planes
  std::vector<int64_t> tap_off;  // bytes from a group's first plane to the cell of p = 0
  // Phases some tap reads (a 1x1 stride-2 conv reads one of four), and phase rows: the
  // others are left at the zero point, unread.
  std::vector<char> used, row_used;
};

Geometry geometry(const ConvInt8Args& a) {
  Geometry g;
  g.c4 = (a.c + 3) / 4;
  g.taps = a.kh * a.kw;
  g.nph = a.sh * a.sw;
  g.hp = a.h + 2 * a.ph;
  g.wp = a.w + 2 * a.pw;
  g.hs = (g.hp + a.sh - 1) / a.sh;
  g.ws = (g.wp + a.sw - 1) / a.sw;
  g.vp = a.oh * g.ws;
  const int64_t max_off = ((a.kh - 1) / a.sh) * g.ws + (a.kw - 1) / a.sw;
  int64_t need = (g.vp + 15) / 16 * 16 + max_off;  // the last tile's reads
  if (need < g.hs * g.ws) need = g.hs * g.ws;
  g.ps = (need + 15) / 16 * 16;
  g.img_bytes = g.c4 * g.nph * g.ps * 4;
  g.tap_off.resize(static_cast<size_t>(g.taps));
  g.used.assign(static_cast<size_t>(g.nph), 0);
  g.row_used.assign(static_cast<size_t>(a.sh), 0);
  for (int64_t ky = 0; ky < a.kh; ++ky)
    for (int64_t kx = 0; kx < a.kw; ++kx) {
      const int64_t phase = (ky % a.sh) * a.sw + kx % a.sw;
      g.tap_off[static_cast<size_t>(ky * a.kw + kx)] = (phase * g.ps + (ky / a.sh) * g.ws + kx / a.sw) * 4;
      g.used[static_cast<size_t>(phase)] = 1;
      g.row_used[static_cast<size_t>(ky % a.sh)] = 1;
    }
  return g;
}

struct Ctx {
  const ConvInt8Args* a;
  const Geometry* g;
  uint8_t* buf;  // [n][img_bytes]
  const float* x_scale;
  const float* x_inv;
  const int32_t* x_zp;
  int64_t ntiles;  // task units of pixels per (image, 8-channel block)
  int64_t tile_px;
};

// One (image, channel group): quantize its 4 channel planes and interleave them into cells.
void build_group(void* p, int64_t chunk) {
  const Ctx& cx = *static_cast<const Ctx*>(p);
  const ConvInt8Args& a = *cx.a;
  const Geometry& g = *cx.g;
  const int64_t b = chunk / g.c4, grp = chunk % g.c4;
  const int32_t zp = cx.x_zp[b];
  const float inv = cx.x_inv[b];
  uint8_t* planes = cx.buf + b * g.img_bytes + grp * g.nph * g.ps * 4;
  const uint32_t fill = 0x01010101u * static_cast<uint32_t>(zp);
  {
    uint32_t* cells = reinterpret_cast<uint32_t*>(planes);
    for (int64_t i = 0; i < g.nph * g.ps; ++i) cells[i] = fill;
  }
  const float* src[4];
  int nch = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t ch = grp * 4 + i;
    src[i] = ch < a.c ? a.x + (b * a.c + ch) * a.h * a.w : nullptr;
    nch += ch < a.c;
  }
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i vzp = _mm256_set1_epi32(zp), lo = _mm256_setzero_si256(), hi = _mm256_set1_epi32(127);
  auto q8 = [&](const float* s) {
    __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(s), vinv)), vzp);
    return _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
  };
  auto q1 = [&](const float* s) -> uint32_t {
    int32_t v = round_to_int(*s * inv) + zp;
    return static_cast<uint32_t>(v < 0 ? 0 : (v > 127 ? 127 : v));
  };
  for (int64_t iy = 0; iy < a.h; ++iy) {
    const int64_t y = iy + a.ph;
    if (!g.row_used[static_cast<size_t>(y % a.sh)]) continue;
    uint8_t* row_base = planes + ((y % a.sh) * a.sw * g.ps + (y / a.sh) * g.ws) * 4;
    const int64_t off = iy * a.w;
    int64_t ix = 0;
    for (; ix + 8 <= a.w; ix += 8) {
      __m256i cell = _mm256_set1_epi32(zp * 0x01010101);
      // Lanes of channels past c keep the zero point (their weights are 0).
      if (nch == 4) {
        cell = _mm256_or_si256(_mm256_or_si256(q8(src[0] + off + ix), _mm256_slli_epi32(q8(src[1] + off + ix), 8)),
                               _mm256_or_si256(_mm256_slli_epi32(q8(src[2] + off + ix), 16),
                                               _mm256_slli_epi32(q8(src[3] + off + ix), 24)));
      } else {
        for (int i = 0; i < nch; ++i) {
          const __m256i keep = _mm256_set1_epi32(~(0xff << (8 * i)));
          cell = _mm256_or_si256(_mm256_and_si256(cell, keep), _mm256_sllv_epi32(q8(src[i] + off + ix), _mm256_set1_epi32(8 * i)));
        }
      }
      const int64_t x = ix + a.pw;
      if (a.sw == 1) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_base + x * 4), cell);
      } else if (a.sw == 2) {
        // Even lanes to one phase, odd lanes to the other: 4 consecutive cells each.
        const __m256i split = _mm256_permutevar8x32_epi32(cell, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
        const int64_t px0 = x % 2;  // phase of lane 0
        if (g.used[static_cast<size_t>((y % a.sh) * 2 + px0)])
          _mm_storeu_si128(reinterpret_cast<__m128i*>(row_base + (px0 * g.ps + x / 2) * 4), _mm256_castsi256_si128(split));
        if (g.used[static_cast<size_t>((y % a.sh) * 2 + 1 - px0)])
          _mm_storeu_si128(reinterpret_cast<__m128i*>(row_base + ((1 - px0) * g.ps + (x + 1) / 2) * 4),
                           _mm256_extracti128_si256(split, 1));
      } else {
        alignas(32) uint32_t t[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(t), cell);
        for (int l = 0; l < 8; ++l) {
          const int64_t xl = x + l;
          std::memcpy(row_base + ((xl % a.sw) * g.ps + xl / a.sw) * 4, &t[l], 4);
        }
      }
    }
    for (; ix < a.w; ++ix) {
      uint32_t v = fill;
      for (int i = 0; i < nch; ++i) v = (v & ~(0xffu << (8 * i))) | (q1(src[i] + off + ix) << (8 * i));
      const int64_t xl = ix + a.pw;
      std::memcpy(row_base + ((xl % a.sw) * g.ps + xl / a.sw) * 4, &v, 4);
    }
  }
}

// Where the lanes of a vector of virtual pixels from p go: runs of lanes in one output
// row, each as (first lane, lanes, index into the [oh, ow] plane). At most 3 runs for 16
// lanes (a row holds at least ws >= 1 virtual pixels; dropped runs are not listed): the
// caller's arrays hold `lanes` entries.
struct Run {
  int l, n;
  int64_t at;
};

inline int output_runs(const ConvInt8Args& a, int64_t ws, int64_t p, int lanes, Run* out) {
  int64_t oy = p / ws, ox = p % ws;
  int k = 0;
  for (int l = 0; l < lanes;) {
    if (oy >= a.oh) break;
    const int64_t run = ws - ox < lanes - l ? ws - ox : lanes - l;
    if (ox < a.ow) out[k++] = Run{l, static_cast<int>(a.ow - ox < run ? a.ow - ox : run), oy * a.ow + ox};
    l += static_cast<int>(run);
    ++oy;
    ox = 0;
  }
  return k;
}

// ---- AVX2: 8 pixels per ymm, maddubs + madd ----------------------------------------
// MV vectors of 8 pixels x 4 output channels (half an 8-channel block): 2 x 4
// accumulators plus operands fit the 16 ymm registers.
template <int MV>
void ytile(const Ctx& cx, const uint8_t* img, int64_t b, int64_t ob, int half, int64_t p0) {
  const ConvInt8Args& a = *cx.a;
  const Geometry& g = *cx.g;
  __m256i acc[MV][4];
#pragma GCC unroll 4
  for (int m = 0; m < MV; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* w = a.packed + ob * g.c4 * g.taps * 32 + half * 16;
  const int64_t gstride = g.nph * g.ps * 4;
  const uint8_t* xg = img + p0 * 4;
  for (int64_t grp = 0; grp < g.c4; ++grp, xg += gstride) {
    for (int64_t t = 0; t < g.taps; ++t, w += 32) {
      const uint8_t* xp = xg + g.tap_off[static_cast<size_t>(t)];
      __m256i xv[MV];
#pragma GCC unroll 4
      for (int m = 0; m < MV; ++m) xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + m * 32));
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i wv = _mm256_set1_epi32(load_i32(w + j * 4));
#pragma GCC unroll 4
        for (int m = 0; m < MV; ++m)
          acc[m][j] = _mm256_add_epi32(acc[m][j], _mm256_madd_epi16(_mm256_maddubs_epi16(xv[m], wv), ones));
      }
    }
  }
  const int32_t zp = cx.x_zp[b];
  const float xs = cx.x_scale[b];
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  Run runs[MV][8];
  int nruns[MV];
  for (int m = 0; m < MV; ++m) nruns[m] = output_runs(a, g.ws, p0 + m * 8, 8, runs[m]);
  for (int j = 0; j < 4; ++j) {
    const int64_t o = ob * 8 + half * 4 + j;
    if (o >= a.o) break;
    const __m256 scale = _mm256_set1_ps(xs * a.w_scale[o]);
    const __m256 bias = _mm256_set1_ps(a.bias ? a.bias[o] : 0.0f);
    const __m256i corr = _mm256_set1_epi32(zp * a.row_sums[o]);
    float* yo = a.y + (b * a.o + o) * a.oh * a.ow;
    for (int m = 0; m < MV; ++m) {
      __m256 out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[m][j], corr)), scale, bias);
      if (a.relu) out = _mm256_max_ps(out, _mm256_setzero_ps());
      for (int r = 0; r < nruns[m]; ++r) {
        const Run& u = runs[m][r];
        if (u.l == 0 && u.n == 8) {
          _mm256_storeu_ps(yo + u.at, out);
          continue;
        }
        const __m256i in = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(u.l - 1)),
                                            _mm256_cmpgt_epi32(_mm256_set1_epi32(u.l + u.n), lane));
        // Masked lanes are neither read nor written; the base may lie before yo.
        float* base = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(yo + u.at) - static_cast<uintptr_t>(u.l) * 4);
        _mm256_maskstore_ps(base, in, out);
      }
    }
  }
}

void ytask(void* p, int64_t chunk) {
  const Ctx& cx = *static_cast<const Ctx*>(p);
  const Geometry& g = *cx.g;
  const int64_t obs = (cx.a->o + 7) / 8;
  const int64_t tg = chunk % cx.ntiles, rest = chunk / cx.ntiles;
  const int64_t ob = rest % obs, b = rest / obs;
  const uint8_t* img = cx.buf + b * g.img_bytes;
  const int64_t pend = (tg + 1) * cx.tile_px < g.vp ? (tg + 1) * cx.tile_px : g.vp;
  for (int half = 0; half < 2 && ob * 8 + half * 4 < cx.a->o; ++half) {
    int64_t p0 = tg * cx.tile_px;
    for (; p0 + 16 <= pend; p0 += 16) ytile<2>(cx, img, b, ob, half, p0);
    for (; p0 < pend; p0 += 8) ytile<1>(cx, img, b, ob, half, p0);
  }
}

// ---- AVX512-VNNI: 16 pixels per zmm, vpdpbusd -------------------------------------------
#define DC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

// Inline asm as in gemm_int8_avx2.cpp: with the intrinsic GCC copies accumulators around.
DC_AVX512 inline __m512i zdot4(__m512i acc, __m512i x, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
  return acc;
}

// MV vectors of 16 pixels x the 8 channels of block ob: 24 accumulators at MV = 3, plus
// MV activation vectors and one broadcast weight, within the 32 zmm registers. Per step
// MV + 8 loads feed 8 * MV vpdpbusd.
template <int MV>
DC_AVX512 void ztile(const Ctx& cx, const uint8_t* img, int64_t b, int64_t ob, int64_t p0) {
  const ConvInt8Args& a = *cx.a;
  const Geometry& g = *cx.g;
  __m512i acc[MV][8];
#pragma GCC unroll 4
  for (int m = 0; m < MV; ++m)
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[m][j] = _mm512_setzero_si512();
  const int8_t* w = a.packed + ob * g.c4 * g.taps * 32;
  const int64_t gstride = g.nph * g.ps * 4;
  const int64_t* toff = g.tap_off.data();
  const uint8_t* xg = img + p0 * 4;
  for (int64_t grp = 0; grp < g.c4; ++grp, xg += gstride) {
    for (int64_t t = 0; t < g.taps; ++t, w += 32) {
      const uint8_t* xp = xg + toff[t];
      __m512i xv[MV];
#pragma GCC unroll 4
      for (int m = 0; m < MV; ++m) xv[m] = _mm512_loadu_si512(xp + m * 64);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m512i wv = _mm512_set1_epi32(load_i32(w + j * 4));
#pragma GCC unroll 4
        for (int m = 0; m < MV; ++m) acc[m][j] = zdot4(acc[m][j], xv[m], wv);
      }
    }
  }
  const int32_t zp = cx.x_zp[b];
  const float xs = cx.x_scale[b];
  Run runs[MV][16];
  int nruns[MV];
  for (int m = 0; m < MV; ++m) nruns[m] = output_runs(a, g.ws, p0 + m * 16, 16, runs[m]);
  for (int j = 0; j < 8; ++j) {
    const int64_t o = ob * 8 + j;
    if (o >= a.o) break;
    const __m512 scale = _mm512_set1_ps(xs * a.w_scale[o]);
    const __m512 bias = _mm512_set1_ps(a.bias ? a.bias[o] : 0.0f);
    const __m512i corr = _mm512_set1_epi32(zp * a.row_sums[o]);
    float* yo = a.y + (b * a.o + o) * a.oh * a.ow;
    for (int m = 0; m < MV; ++m) {
      __m512 out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[m][j], corr)), scale, bias);
      if (a.relu) out = _mm512_max_ps(out, _mm512_setzero_ps());
      for (int r = 0; r < nruns[m]; ++r) {
        const Run& u = runs[m][r];
        // Masked lanes are neither read nor written; the base may lie before yo.
        float* base = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(yo + u.at) - static_cast<uintptr_t>(u.l) * 4);
        _mm512_mask_storeu_ps(base, static_cast<__mmask16>(((1u << u.n) - 1u) << u.l), out);
      }
    }
  }
}

DC_AVX512 void ztask_impl(const Ctx& cx, int64_t chunk) {
  const Geometry& g = *cx.g;
  const int64_t obs = (cx.a->o + 7) / 8;
  const int64_t tg = chunk % cx.ntiles, rest = chunk / cx.ntiles;
  const int64_t ob = rest % obs, b = rest / obs;
  const uint8_t* img = cx.buf + b * g.img_bytes;
  const int64_t pend = (tg + 1) * cx.tile_px < g.vp ? (tg + 1) * cx.tile_px : g.vp;
  int64_t p0 = tg * cx.tile_px;
  for (; p0 + 48 <= pend; p0 += 48) ztile<3>(cx, img, b, ob, p0);
  if (p0 + 32 <= pend) ztile<2>(cx, img, b, ob, p0), p0 += 32;
  for (; p0 < pend; p0 += 16) ztile<1>(cx, img, b, ob, p0);
}

void ztask(void* p, int64_t chunk) { ztask_impl(*static_cast<const Ctx*>(p), chunk); }

}  // namespace

void conv_int8_avx2(const ConvInt8Args& a, const float* x_scale, const float* x_inv, const int32_t* x_zp,
                    int nthreads, bool zmm) {
  const Geometry g = geometry(a);
  std::unique_ptr<uint8_t, void (*)(void*)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>((a.n * g.img_bytes + 63) / 64 * 64))), std::free);
  if (!buf) throw std::bad_alloc();
  Ctx cx{&a, &g, buf.get(), x_scale, x_inv, x_zp, 0, 0};
  parallel_chunks(a.n * g.c4 >= 4 ? nthreads : 1, a.n * g.c4, build_group, &cx);
  // Tasks: (image, 8-channel block, run of pixel tiles), about 192 virtual pixels each
  // (a multiple of both tile widths), so that small images still give every thread work.
  cx.tile_px = 192;
  cx.ntiles = (g.vp + cx.tile_px - 1) / cx.tile_px;
  const int64_t tasks = a.n * ((a.o + 7) / 8) * cx.ntiles;
  parallel_chunks(nthreads, tasks, zmm ? ztask : ytask, &cx);
}

}  // namespace kernels
}  // namespace deepcomp
