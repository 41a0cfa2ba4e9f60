// AVX2 + FMA codebook GEMM over dense uint8 codes (lut_gemm), with a zmm variant for CPUs
// with AVX-512 (F, BW, VL) in static functions carrying a target attribute; the file is
// compiled -mavx2 -mfma and DEEPCOMP_NO_AVX512=1 keeps everything on ymm.
//
// W is never held in fp32: each task decodes a tile of rows of codes into a per-thread
// buffer that stays in L1/L2 (a codebook of up to 32 entries, zmm: 64, by permutes over the
// codebook held in registers; larger ones on zmm from four byte planes with AVX512-VBMI's
// vpermi2b, or without VBMI by a chain of vpermt2ps and mask blends; on ymm by gathers
// from a 1 KiB table) and then runs every row of X over the decoded
// tile, 4 weight rows x up to 4 (zmm) or 2 (ymm) input rows at a time. So each code is read
// from memory once per call and decoded once per call, whatever the batch.
// Each output is one vector accumulator over k in order, reduced once at the end, so it
// comes out the same whatever the batch, the tile sizes or the thread count.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

constexpr int64_t kRowGroup = 4;  // weight rows per micro-kernel

// The decoded tile of the calling thread: grown on demand, kept for the next call (a
// few hundred KiB at most per thread), 64-byte aligned so that rows of kp floats are.
float* tile_buffer(size_t floats) {
  struct Buf {
    float* p = nullptr;
    size_t cap = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf;
  if (buf.cap < floats) {
    std::free(buf.p);
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    buf.p = static_cast<float*>(std::aligned_alloc(64, bytes));
    buf.cap = buf.p ? floats : 0;
    if (!buf.p) std::abort();  // a few hundred KiB: out of memory is not recoverable here
  }
  return buf.p;
}

struct Plan {
  int64_t kp;       // k rounded up to the vector width (tile row stride, zero padded)
  int64_t rows;     // weight rows per task (multiple of kRowGroup)
  int64_t bblock;   // batch rows per pass over a row group
};

Plan make_plan(const LutArgs& a, int64_t width, int nthreads) {
  Plan p;
  p.kp = (a.k + width - 1) / width * width;
  // The tile is reread by every batch row: at small batches it must stay in L1, beyond
  // that L2 is enough and bigger tiles mean fewer, longer tasks.
  const int64_t budget = a.batch <= 4 ? (24 << 10) : (192 << 10);
  int64_t rows = budget / (p.kp * static_cast<int64_t>(sizeof(float))) / kRowGroup * kRowGroup;
  rows = rows < kRowGroup ? kRowGroup : (rows > 64 ? 64 : rows);
  if (nthreads > 1) {  // at least a few tasks per thread, so that they balance
    int64_t fair = (a.n + 4 * nthreads - 1) / (4 * nthreads);
    fair = (fair + kRowGroup - 1) / kRowGroup * kRowGroup;
    if (fair < rows) rows = fair < kRowGroup ? kRowGroup : fair;
  }
  p.rows = rows;
  // The slice of X one pass reads stays in L1 (a quarter of it for the tile's group).
  int64_t bb = (32 << 10) / (a.k * static_cast<int64_t>(sizeof(float)) + 1) / 4 * 4;
  p.bblock = bb < 4 ? 4 : (bb > 64 ? 64 : bb);
  return p;
}

inline void store_outputs(const LutArgs& a, const float* out, int bt, int64_t b, int64_t r, int64_t nr) {
  for (int i = 0; i < bt; ++i) {
    float* y = a.y + (b + i) * a.n + r;
    for (int64_t j = 0; j < nr; ++j) {
      float v = out[i * kRowGroup + j] + (a.bias ? a.bias[r + j] : 0.0f);
      if (a.relu) v = v > 0.0f ? v : 0.0f;
      y[j] = v;
    }
  }
}

// ---- ymm ---------------------------------------------------------------------------------

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Codebook values of 8 codes: permutes over the first 8 / 16 / 32 entries held in
// registers (blendv picks on a code bit moved to the sign), a gather beyond.
template <int K>
inline __m256 ylookup(__m256i c, const __m256* t, const float* table) {
  if constexpr (K == 8) {
    return _mm256_permutevar8x32_ps(t[0], c);
  } else if constexpr (K == 16) {
    const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(c, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], c), _mm256_permutevar8x32_ps(t[1], c), b3);
  } else if constexpr (K == 32) {
    const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(c, 28));
    const __m256 b4 = _mm256_castsi256_ps(_mm256_slli_epi32(c, 27));
    const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], c), _mm256_permutevar8x32_ps(t[1], c), b3);
    const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[2], c), _mm256_permutevar8x32_ps(t[3], c), b3);
    return _mm256_blendv_ps(lo, hi, b4);
  } else {
    return _mm256_i32gather_ps(table, c, 4);
  }
}

template <int K>
void ydecode(const LutArgs& a, const float* table, int64_t r0, int64_t nr, int64_t rows_padded, int64_t kp,
             float* buf) {
  __m256 t[4];
  for (int i = 0; i < 4; ++i) t[i] = _mm256_load_ps(table + 8 * i);
  const int64_t kf = a.k / 8 * 8;
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* c = a.codes + (r0 + r) * a.k;
    float* o = buf + r * kp;
    int64_t i = 0;
    for (; i < kf; i += 8) {
      const __m256i ci = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + i)));
      _mm256_store_ps(o + i, ylookup<K>(ci, t, table));
    }
    if (i < a.k) {
      alignas(16) uint8_t tail[16] = {0};
      std::memcpy(tail, c + i, static_cast<size_t>(a.k - i));
      const __m256i ci = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(tail)));
      alignas(32) float v[8];
      _mm256_store_ps(v, ylookup<K>(ci, t, table));
      for (int64_t j = 0; j < 8; ++j) o[i + j] = j < a.k - i ? v[j] : 0.0f;
    }
  }
  for (int64_t r = nr; r < rows_padded; ++r) std::memset(buf + r * kp, 0, static_cast<size_t>(kp) * sizeof(float));
}

// out[b][r] = sum_k x[b, k] w[r, k] for BT input rows and kRowGroup tile rows.
template <int BT>
void ymicro(const float* x, int64_t k, const float* w, int64_t kp, float* out) {
  __m256 acc[BT][kRowGroup];
  for (int b = 0; b < BT; ++b)
    for (int r = 0; r < kRowGroup; ++r) acc[b][r] = _mm256_setzero_ps();
  const int64_t kf = k / 8 * 8;
  int64_t i = 0;
  for (; i < kf; i += 8) {
    __m256 xv[BT];
    for (int b = 0; b < BT; ++b) xv[b] = _mm256_loadu_ps(x + b * k + i);
    for (int r = 0; r < kRowGroup; ++r) {
      const __m256 wv = _mm256_load_ps(w + r * kp + i);
      for (int b = 0; b < BT; ++b) acc[b][r] = _mm256_fmadd_ps(xv[b], wv, acc[b][r]);
    }
  }
  if (i < k) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(k - i)), lane);
    __m256 xv[BT];
    for (int b = 0; b < BT; ++b) xv[b] = _mm256_maskload_ps(x + b * k + i, m);
    for (int r = 0; r < kRowGroup; ++r) {
      const __m256 wv = _mm256_load_ps(w + r * kp + i);  // zero past k
      for (int b = 0; b < BT; ++b) acc[b][r] = _mm256_fmadd_ps(xv[b], wv, acc[b][r]);
    }
  }
  for (int b = 0; b < BT; ++b)
    for (int r = 0; r < kRowGroup; ++r) out[b * kRowGroup + r] = hsum8(acc[b][r]);
}

template <int K>
void ygemm(const LutArgs& a, const float* table, int nthreads) {
  const Plan p = make_plan(a, 8, nthreads);
  const int64_t tasks = (a.n + p.rows - 1) / p.rows;
  for_chunks(nthreads, tasks, [&](int64_t t) {
    const int64_t r0 = t * p.rows;
    const int64_t nr = a.n - r0 < p.rows ? a.n - r0 : p.rows;
    const int64_t padded = (nr + kRowGroup - 1) / kRowGroup * kRowGroup;
    float* buf = tile_buffer(static_cast<size_t>(padded * p.kp));
    ydecode<K>(a, table, r0, nr, padded, p.kp, buf);
    float out[2 * kRowGroup];
    for (int64_t b0 = 0; b0 < a.batch; b0 += p.bblock) {
      const int64_t b1 = b0 + p.bblock < a.batch ? b0 + p.bblock : a.batch;
      for (int64_t g = 0; g < nr; g += kRowGroup) {
        const float* w = buf + g * p.kp;
        const int64_t ng = nr - g < kRowGroup ? nr - g : kRowGroup;
        int64_t b = b0;
        for (; b + 2 <= b1; b += 2) {
          ymicro<2>(a.x + b * a.k, a.k, w, p.kp, out);
          store_outputs(a, out, 2, b, r0 + g, ng);
        }
        if (b < b1) {
          ymicro<1>(a.x + b * a.k, a.k, w, p.kp, out);
          store_outputs(a, out, 1, b, r0 + g, ng);
        }
      }
    }
  });
}

// ---- zmm ---------------------------------------------------------------------------------
#define DC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))

// Codebook values of 16 codes from T tables of 16 entries held in registers: one vpermps
// (T = 1) or vpermt2ps (T = 2) per 32 entries, then mask blends on code bits 5, 6, 7.
template <int T>
DC_AVX512 inline __m512 zlookup(__m512i c, const __m512* t) {
  if constexpr (T == 1) {
    return _mm512_permutexvar_ps(c, t[0]);
  } else if constexpr (T == 2) {
    return _mm512_permutex2var_ps(t[0], c, t[1]);
  } else {
    const __m512 lo = zlookup<T / 2>(c, t);
    const __m512 hi = zlookup<T / 2>(c, t + T / 2);
    const __mmask16 m = _mm512_test_epi32_mask(c, _mm512_set1_epi32(8 * T));
    return _mm512_mask_blend_ps(m, lo, hi);
  }
}

// T: tables of 16 entries in registers. (Gathers from the table instead measured 1.5x
// slower on Zen 4 for 256 entries.)
template <int T>
DC_AVX512 void zdecode(const LutArgs& a, const float* table, int64_t r0, int64_t nr, int64_t rows_padded,
                       int64_t kp, float* buf) {
  __m512 t[T];
  for (int i = 0; i < T; ++i) t[i] = _mm512_load_ps(table + 16 * i);
  const int64_t kf = a.k / 16 * 16;
  const __mmask16 mt = static_cast<__mmask16>((1u << (a.k - kf)) - 1u);
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* c = a.codes + (r0 + r) * a.k;
    float* o = buf + r * kp;
    for (int64_t i = 0; i < kf; i += 16) {
      const __m512i ci = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i)));
      _mm512_store_ps(o + i, zlookup<T>(ci, t));
    }
    if (mt) {
      const __m512i ci = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mt, c + kf));
      _mm512_store_ps(o + kf, _mm512_maskz_mov_ps(mt, zlookup<T>(ci, t)));
    }
  }
  for (int64_t r = nr; r < rows_padded; ++r) std::memset(buf + r * kp, 0, static_cast<size_t>(kp) * sizeof(float));
}

// ---- zmm with AVX512-VBMI: codebooks of 65..256 entries as four byte planes ---------------
// A 256-entry codebook in fp32 is 16 zmm; the vpermt2ps chain above needs 15 shuffles and
// blends per 16 codes. Split instead into four planes (byte j of every entry): vpermi2b
// looks up 64 codes in 128 entries of a plane at once, so 64 codes cost 8 (or 4, for up
// to 128 entries) vpermi2b, 4 byte blends on code bit 7 and 8 unpacks that interleave the
// planes back into floats (the bits of the entries, moved, never computed with).
#define DC_VBMI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vbmi")))

bool vbmi_usable() {
  static const bool has = __builtin_cpu_supports("avx512vbmi");
  return has && lut_vbmi_allowed();
}

// The unpacks fill output vector r, 128-bit lane L, dword d from byte 16 L + 4 r + d of
// their inputs; the codes are first permuted so that this byte holds code 16 r + 4 L + d
// (swapping r and L is its own inverse).
DC_VBMI inline __m512i zb_order() {
  alignas(64) uint8_t idx[64];
  for (int l = 0; l < 4; ++l)
    for (int r = 0; r < 4; ++r)
      for (int d = 0; d < 4; ++d) idx[16 * l + 4 * r + d] = static_cast<uint8_t>(16 * r + 4 * l + d);
  return _mm512_load_si512(idx);
}

// NT: 64-entry tables per plane (2: up to 128 entries, 4: up to 256).
template <int NT>
DC_VBMI inline void zb_lookup64(__m512i c, const __m512i (*pl)[4], __m512 out[4]) {
  __m512i b[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512i lo = _mm512_permutex2var_epi8(pl[j][0], c, pl[j][1]);
    if constexpr (NT == 2) {
      b[j] = lo;
    } else {
      const __m512i hi = _mm512_permutex2var_epi8(pl[j][2], c, pl[j][3]);
      b[j] = _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi);
    }
  }
  const __m512i lo01 = _mm512_unpacklo_epi8(b[0], b[1]), hi01 = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i lo23 = _mm512_unpacklo_epi8(b[2], b[3]), hi23 = _mm512_unpackhi_epi8(b[2], b[3]);
  out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23));
  out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23));
  out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23));
  out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23));
}

template <int NT>
DC_VBMI void zbdecode(const LutArgs& a, const float* table, int64_t r0, int64_t nr, int64_t rows_padded,
                      int64_t kp, float* buf) {
  alignas(64) uint8_t planes[4][256];
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(table);
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 4; ++j) planes[j][i] = bytes[4 * i + j];
  __m512i pl[4][4];
  for (int j = 0; j < 4; ++j)
    for (int t = 0; t < 4; ++t) pl[j][t] = _mm512_load_si512(planes[j] + 64 * t);
  const __m512i order = zb_order();
  const int64_t kf = a.k / 64 * 64;
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* c = a.codes + (r0 + r) * a.k;
    float* o = buf + r * kp;
    __m512 v[4];
    for (int64_t i = 0; i < kf; i += 64) {
      zb_lookup64<NT>(_mm512_permutexvar_epi8(order, _mm512_loadu_si512(c + i)), pl, v);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) _mm512_store_ps(o + i + 16 * q, v[q]);
    }
    if (kf < a.k) {
      const int64_t rest = a.k - kf;  // 1..63
      const __mmask64 m = (1ull << rest) - 1u;
      zb_lookup64<NT>(_mm512_permutexvar_epi8(order, _mm512_maskz_loadu_epi8(m, c + kf)), pl, v);
      for (int q = 0; 16 * q < rest; ++q) {
        const int64_t left = rest - 16 * q;
        const __mmask16 mq = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
        _mm512_store_ps(o + kf + 16 * q, _mm512_maskz_mov_ps(mq, v[q]));
      }
    }
  }
  for (int64_t r = nr; r < rows_padded; ++r) std::memset(buf + r * kp, 0, static_cast<size_t>(kp) * sizeof(float));
}

// The sums of four accumulators at once (one horizontal sum each would take 4 shuffles and
// 4 adds per accumulator): 256-bit halves, then 128-bit quarters, then within quarters. The
// same tree for every output, whatever the batch tile.
DC_AVX512 inline void zreduce4(const __m512* acc, float* out) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0], acc[1], 0x44), _mm512_shuffle_f32x4(acc[0], acc[1], 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2], acc[3], 0x44), _mm512_shuffle_f32x4(acc[2], acc[3], 0xEE));
  // Quarter q of s holds accumulator q's four partial sums.
  const __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  const __m512 t = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
  const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u)));
}

template <int BT>
DC_AVX512 void zmicro(const float* x, int64_t k, const float* w, int64_t kp, float* out) {
  __m512 acc[BT][kRowGroup];
#pragma GCC unroll 4
  for (int b = 0; b < BT; ++b)
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) acc[b][r] = _mm512_setzero_ps();
  const int64_t kf = k / 16 * 16;
  int64_t i = 0;
  for (; i < kf; i += 16) {
    __m512 wv[kRowGroup];
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) wv[r] = _mm512_load_ps(w + r * kp + i);
#pragma GCC unroll 4
    for (int b = 0; b < BT; ++b) {
      const __m512 xv = _mm512_loadu_ps(x + b * k + i);
#pragma GCC unroll 4
      for (int r = 0; r < kRowGroup; ++r) acc[b][r] = _mm512_fmadd_ps(xv, wv[r], acc[b][r]);
    }
  }
  if (i < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1u);
    __m512 wv[kRowGroup];
    for (int r = 0; r < kRowGroup; ++r) wv[r] = _mm512_load_ps(w + r * kp + i);  // zero past k
    for (int b = 0; b < BT; ++b) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + b * k + i);
      for (int r = 0; r < kRowGroup; ++r) acc[b][r] = _mm512_fmadd_ps(xv, wv[r], acc[b][r]);
    }
  }
  for (int b = 0; b < BT; ++b) zreduce4(acc[b], out + b * kRowGroup);
}

template <int T>
DC_AVX512 void ztask(const LutArgs& a, const float* table, const Plan& p, int64_t task) {
  const int64_t r0 = task * p.rows;
  const int64_t nr = a.n - r0 < p.rows ? a.n - r0 : p.rows;
  const int64_t padded = (nr + kRowGroup - 1) / kRowGroup * kRowGroup;
  float* buf = tile_buffer(static_cast<size_t>(padded * p.kp));
  if constexpr (T < 0) zbdecode<-T>(a, table, r0, nr, padded, p.kp, buf);
  else zdecode<T>(a, table, r0, nr, padded, p.kp, buf);
  float out[4 * kRowGroup];
  for (int64_t b0 = 0; b0 < a.batch; b0 += p.bblock) {
    const int64_t b1 = b0 + p.bblock < a.batch ? b0 + p.bblock : a.batch;
    for (int64_t g = 0; g < nr; g += kRowGroup) {
      const float* w = buf + g * p.kp;
      const int64_t ng = nr - g < kRowGroup ? nr - g : kRowGroup;
      int64_t b = b0;
      for (; b + 4 <= b1; b += 4) {
        zmicro<4>(a.x + b * a.k, a.k, w, p.kp, out);
        store_outputs(a, out, 4, b, r0 + g, ng);
      }
      switch (b1 - b) {
        case 3: zmicro<3>(a.x + b * a.k, a.k, w, p.kp, out); store_outputs(a, out, 3, b, r0 + g, ng); break;
        case 2: zmicro<2>(a.x + b * a.k, a.k, w, p.kp, out); store_outputs(a, out, 2, b, r0 + g, ng); break;
        case 1: zmicro<1>(a.x + b * a.k, a.k, w, p.kp, out); store_outputs(a, out, 1, b, r0 + g, ng); break;
        default: break;
      }
    }
  }
}

template <int T>
void zgemm(const LutArgs& a, const float* table, int nthreads) {
  const Plan p = make_plan(a, 16, nthreads);
  for_chunks(nthreads, (a.n + p.rows - 1) / p.rows, [&](int64_t t) { ztask<T>(a, table, p, t); });
}

// lut_decode: rows decoded into the tile as for the GEMM, then copied out unpadded.
constexpr int64_t kDecodeTileBytes = 64 << 10;

inline int64_t decode_rows(int64_t kp) {
  int64_t rows = kDecodeTileBytes / (kp * static_cast<int64_t>(sizeof(float))) / kRowGroup * kRowGroup;
  return rows < kRowGroup ? kRowGroup : rows;
}

inline void copy_rows(const LutArgs& a, const float* buf, int64_t kp, int64_t r0, int64_t nr) {
  for (int64_t r = 0; r < nr; ++r)
    std::memcpy(a.y + (r0 + r) * a.k, buf + r * kp, static_cast<size_t>(a.k) * sizeof(float));
}

template <int T>
DC_AVX512 void zdecode_task(const LutArgs& a, const float* table, int64_t kp, int64_t rows, int64_t t) {
  const int64_t r0 = t * rows;
  const int64_t nr = a.n - r0 < rows ? a.n - r0 : rows;
  float* buf = tile_buffer(static_cast<size_t>(nr * kp));
  if constexpr (T < 0) zbdecode<-T>(a, table, r0, nr, nr, kp, buf);
  else zdecode<T>(a, table, r0, nr, nr, kp, buf);
  copy_rows(a, buf, kp, r0, nr);
}

template <int T>
void zdecode_all(const LutArgs& a, const float* table, int nthreads) {
  const int64_t kp = (a.k + 15) / 16 * 16, rows = decode_rows(kp);
  for_chunks(nthreads, (a.n + rows - 1) / rows, [&](int64_t t) { zdecode_task<T>(a, table, kp, rows, t); });
}

template <int K>
void ydecode_all(const LutArgs& a, const float* table, int nthreads) {
  const int64_t kp = (a.k + 7) / 8 * 8, rows = decode_rows(kp);
  for_chunks(nthreads, (a.n + rows - 1) / rows, [&](int64_t t) {
    const int64_t r0 = t * rows;
    const int64_t nr = a.n - r0 < rows ? a.n - r0 : rows;
    float* buf = tile_buffer(static_cast<size_t>(nr * kp));
    ydecode<K>(a, table, r0, nr, nr, kp, buf);
    copy_rows(a, buf, kp, r0, nr);
  });
}

// One choice of tile kernel by codebook size for both entry points: under AVX-512, zmm
// lookups over 1/2/4 registers of the table (VBMI byte permutes or 8/16 registers past
// 64 entries), else ymm permutes or gathers. `z` and `y` take the width as a type.
template <int K>
using Width = std::integral_constant<int, K>;

template <typename Z, typename Y>
void by_codebook_size(const LutArgs& a, Z&& z, Y&& y) {
  if (avx512_usable(/*need_vnni=*/false)) {
    if (a.ncb <= 16) z(Width<1>{});
    else if (a.ncb <= 32) z(Width<2>{});
    else if (a.ncb <= 64) z(Width<4>{});
    else if (vbmi_usable()) {
      if (a.ncb <= 128) z(Width<-2>{});
      else z(Width<-4>{});
    } else if (a.ncb <= 128) z(Width<8>{});
    else z(Width<16>{});
    return;
  }
  if (a.ncb <= 8) y(Width<8>{});
  else if (a.ncb <= 16) y(Width<16>{});
  else if (a.ncb <= 32) y(Width<32>{});
  else y(Width<0>{});
}

// The codebook padded to 256 entries: every uint8 code reads inside it (0 past ncb).
void padded_table(const LutArgs& a, float* table) {
  for (int i = 0; i < 256; ++i) table[i] = i < a.ncb ? a.codebook[i] : 0.0f;
}

}  // namespace

void lut_decode_avx2(const LutArgs& a, int nthreads) {
  alignas(64) float table[256];
  padded_table(a, table);
  by_codebook_size(
      a, [&](auto w) { zdecode_all<decltype(w)::value>(a, table, nthreads); },
      [&](auto w) { ydecode_all<decltype(w)::value>(a, table, nthreads); });
}

void lut_gemm_avx2(const LutArgs& a, int nthreads) {
  alignas(64) float table[256];
  padded_table(a, table);
  by_codebook_size(
      a, [&](auto w) { zgemm<decltype(w)::value>(a, table, nthreads); },
      [&](auto w) { ygemm<decltype(w)::value>(a, table, nthreads); });
}

}  // namespace kernels
}  // namespace deepcomp
