// AVX2 int8 GEMM. The inner step multiplies 4 activations (u8, broadcast) by 4 weights
// of 8 output channels (s8, packed) with _mm256_maddubs_epi16 and widens the 16-bit pair
// sums with _mm256_madd_epi16 against ones. Activations are 7-bit (<= 127) and weights in
// [-127, 127], so a pair sum is at most 2 * 127 * 127 = 32258 and the saturating add in
// maddubs never saturates: the result is the exact integer dot product, the same as the
// scalar twin's. Static functions and intrinsics only (see spmm_avx2.cpp).
// Each thread prefetches the weights of the chunk it computes next into L2, spread over
// the row tiles of the current one, so that memory is read while the multipliers run.
// With VNNI enabled and a CPU with AVX512-VNNI, batches of 4 rows or more take a zmm path
// (8 rows x 32 channels per tile, vpdpbusd on zmm); DEEPCOMP_NO_AVX512=1 disables it.
#include <immintrin.h>

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

inline int32_t round_to_int(float v) { return _mm_cvtss_si32(_mm_set_ss(v)); }  // half to even

inline float fma1(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// acc += dot4(u8 x, s8 w) per int32 lane. Vnni: one vpdpbusd (AVX-VNNI, the VEX form:
// same registers, no AVX-512), through inline asm because the intrinsic would need the
// whole file compiled for avxvnni; it adds the four products into int32 without an int16
// step, so it gives the same exact sums as maddubs + madd (which cannot saturate here).
template <bool Vnni>
inline __m256i dot4(__m256i acc, __m256i x, __m256i w, __m256i ones) {
  if constexpr (Vnni) {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(x), "x"(w));
    return acc;
  } else {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
  }
}

inline __m256i bcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i load_part(const int32_t* p, bool first) {
  return first ? _mm256_setzero_si256() : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Requests the weights a thread reads next into L2 while it computes the current chunk.
// A chunk's weights come from memory only on its first row tile (every later tile reuses
// them from L1); without help that tile waits on memory while the others run at full
// speed. Spreading the next chunk's lines over all tiles of this one keeps the memory
// traffic going the whole time. Prefetches never change results.
// Addresses are integers: the first line may start before the packed array (it is only
// 32-byte aligned), which a hint may touch but pointer arithmetic may not.
struct Prefetch {
  uintptr_t line0 = 0;      // next lines of the two 8-channel blocks
  uintptr_t line1 = 0;
  int64_t left = 0;         // lines still to request from each block
  int64_t every = 1 << 30;  // k-groups between two requests
};

inline void prefetch_step(Prefetch& pf) {
  if (pf.left > 0) {
    _mm_prefetch(reinterpret_cast<const char*>(pf.line0), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(pf.line1), _MM_HINT_T1);
    pf.line0 += 64;
    pf.line1 += 64;
    --pf.left;
  }
}

// Output: channels o0 .. o0 + 7 of batch row b from the finished int32 sums.
inline void finish8(const Int8Args& a, int64_t b, int64_t o0, __m256i acc) {
  const int32_t zp = a.x_zp[b];
  const float xs = a.x_scale[b];
  float* y = a.y + b * a.n;
  if (o0 >= a.n) return;
  if (o0 + 8 <= a.n) {
    const __m256i rs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.row_sums + o0));
    const __m256i centred = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(zp), rs));
    const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(xs), _mm256_loadu_ps(a.w_scale + o0));
    const __m256 bias = a.bias ? _mm256_loadu_ps(a.bias + o0) : _mm256_setzero_ps();
    __m256 out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(centred), scale, bias);
    if (a.relu) out = _mm256_max_ps(out, _mm256_setzero_ps());
    _mm256_storeu_ps(y + o0, out);
    return;
  }
  alignas(32) int32_t tmp[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc);
  for (int64_t c = 0; o0 + c < a.n; ++c) {
    const int64_t o = o0 + c;
    const int32_t centred = tmp[c] - zp * a.row_sums[o];
    float out = fma1(static_cast<float>(centred), xs * a.w_scale[o], a.bias ? a.bias[o] : 0.0f);
    if (a.relu) out = out > 0.0f ? out : 0.0f;
    y[o] = out;
  }
}

// 4 batch rows x 16 channels (blocks nb, nb + 1) over k-groups [g0, g1). Written out with
// named accumulators so that they stay in registers. Partial sums carry over between K
// chunks in part[4][16] (first: start from zero; last: finish into y). Not inlined: in
// the caller's register allocation the loop read its row offsets back from the stack.
template <bool Vnni>
__attribute__((noinline)) void tile4x16(const Int8Args& a, int64_t m0, int64_t nb, int64_t k4, int64_t g0, int64_t g1, int32_t* part,
              bool first, bool last, Prefetch& pf) {
  const int64_t kp = k4 * 4;
  __m256i c00 = load_part(part + 0, first), c01 = load_part(part + 8, first);
  __m256i c10 = load_part(part + 16, first), c11 = load_part(part + 24, first);
  __m256i c20 = load_part(part + 32, first), c21 = load_part(part + 40, first);
  __m256i c30 = load_part(part + 48, first), c31 = load_part(part + 56, first);
  const __m256i ones = _mm256_set1_epi16(1);
  // Advancing pointers, the other rows and block at fixed offsets: 6 registers in all.
  const int64_t wstride = k4 * 32, kp3 = 3 * kp;
  const int8_t* wp = a.packed + nb * wstride + g0 * 32;
  const uint8_t* xp = a.xq + m0 * kp + g0 * 4;
  for (int64_t g = g0; g < g1;) {
    prefetch_step(pf);
    const int64_t ge = g1 - g > pf.every ? g + pf.every : g1;
    const int8_t* const wend = wp + (ge - g) * 32;
    g = ge;
    for (; wp != wend; wp += 32, xp += 4) {
      const __m256i wa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
      const __m256i wb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + wstride));
      __m256i xv = bcast4(xp);
      c00 = dot4<Vnni>(c00, xv, wa, ones);
      c01 = dot4<Vnni>(c01, xv, wb, ones);
      xv = bcast4(xp + kp);
      c10 = dot4<Vnni>(c10, xv, wa, ones);
      c11 = dot4<Vnni>(c11, xv, wb, ones);
      xv = bcast4(xp + 2 * kp);
      c20 = dot4<Vnni>(c20, xv, wa, ones);
      c21 = dot4<Vnni>(c21, xv, wb, ones);
      xv = bcast4(xp + kp3);
      c30 = dot4<Vnni>(c30, xv, wa, ones);
      c31 = dot4<Vnni>(c31, xv, wb, ones);
    }
  }
  if (!last) {
    __m256i* pp = reinterpret_cast<__m256i*>(part);
    _mm256_storeu_si256(pp + 0, c00); _mm256_storeu_si256(pp + 1, c01);
    _mm256_storeu_si256(pp + 2, c10); _mm256_storeu_si256(pp + 3, c11);
    _mm256_storeu_si256(pp + 4, c20); _mm256_storeu_si256(pp + 5, c21);
    _mm256_storeu_si256(pp + 6, c30); _mm256_storeu_si256(pp + 7, c31);
    return;
  }
  const int64_t o0 = nb * 8;
  finish8(a, m0, o0, c00); finish8(a, m0, o0 + 8, c01);
  finish8(a, m0 + 1, o0, c10); finish8(a, m0 + 1, o0 + 8, c11);
  finish8(a, m0 + 2, o0, c20); finish8(a, m0 + 2, o0 + 8, c21);
  finish8(a, m0 + 3, o0, c30); finish8(a, m0 + 3, o0 + 8, c31);
}

// 1 batch row x 16 channels; four accumulators over alternating k-groups keep the
// dependency chains short (the sum of the four is the same exact integer).
template <bool Vnni>
void tile1x16(const Int8Args& a, int64_t m0, int64_t nb, int64_t k4, int64_t g0, int64_t g1, int32_t* part,
              bool first, bool last, Prefetch& pf) {
  const int64_t kp = k4 * 4;
  __m256i c0 = load_part(part + 0, first), c1 = load_part(part + 8, first);
  __m256i d0 = _mm256_setzero_si256(), d1 = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* w0 = a.packed + nb * k4 * 32;
  const int8_t* w1 = w0 + k4 * 32;
  const uint8_t* x0 = a.xq + m0 * kp;
  int64_t g = g0;
  for (; g + 2 <= g1;) {
    prefetch_step(pf);
    const int64_t ge = g1 - g > pf.every ? g + pf.every : g1;
    for (; g + 2 <= ge; g += 2) {
      const __m256i xv = bcast4(x0 + g * 4), xw = bcast4(x0 + g * 4 + 4);
      c0 = dot4<Vnni>(c0, xv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + g * 32)), ones);
      c1 = dot4<Vnni>(c1, xv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + g * 32)), ones);
      d0 = dot4<Vnni>(d0, xw, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + g * 32 + 32)), ones);
      d1 = dot4<Vnni>(d1, xw, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + g * 32 + 32)), ones);
    }
  }
  if (g < g1) {
    const __m256i xv = bcast4(x0 + g * 4);
    c0 = dot4<Vnni>(c0, xv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + g * 32)), ones);
    c1 = dot4<Vnni>(c1, xv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + g * 32)), ones);
  }
  c0 = _mm256_add_epi32(c0, d0);
  c1 = _mm256_add_epi32(c1, d1);
  if (!last) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(part), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(part + 8), c1);
    return;
  }
  finish8(a, m0, nb * 8, c0);
  finish8(a, m0, nb * 8 + 8, c1);
}

// K is walked in chunks of kChunk groups (4 k each): one chunk of a pair of weight blocks
// (2 * kChunk * 32 bytes = 32 KiB) stays in L1 while every batch row passes over it.
constexpr int64_t kChunk = 512;

// The quantized activations a task reads for one K range stay in L2 while every task
// passes over them up to this size; past it (batch 128 at K = 25088: 3.2 MB), K is cut
// into super-chunks that each fit, walked in the outer loop, and every task keeps its
// partial sums in memory between them. (Both the ymm and the zmm paths.)
constexpr int64_t kXqL2Bytes = 512 << 10;

// K-groups [gs0, gs1) of the pair of blocks from nb for every batch row. next_nb: the
// pair this thread computes after this one (-1: none known), whose first chunk is
// prefetched during the last chunk of this one.
template <bool Vnni>
void pair_task(const Int8Args& a, int64_t nb, int64_t k4, int64_t gs0, int64_t gs1, int32_t* part,
               int64_t next_nb) {
  const int64_t m4 = a.batch / 4 * 4;
  const int64_t tiles = m4 / 4 + (a.batch - m4);
  for (int64_t g0 = gs0; g0 < gs1; g0 += kChunk) {
    const int64_t g1 = g0 + kChunk < gs1 ? g0 + kChunk : gs1;
    const bool first = g0 == 0, last = g1 == k4;
    Prefetch pf;
    int64_t pnb = -1, h0 = 0;
    if (g1 < gs1) pnb = nb, h0 = g1;
    else if (next_nb >= 0) pnb = next_nb, h0 = gs0;
    // Below 4 rows a chunk is read once per row at streaming speed, which the hardware
    // prefetcher already covers (measured: prefetching there was slower at batch 2).
    if (pnb >= 0 && a.batch >= 4) {
      const int64_t h1 = h0 + kChunk < gs1 ? h0 + kChunk : gs1;
      const uintptr_t b0 = reinterpret_cast<uintptr_t>(a.packed + (pnb * k4 + h0) * 32);
      const uintptr_t b1 = b0 + static_cast<uintptr_t>(k4 * 32);
      pf.line0 = b0 & ~uintptr_t{63};
      pf.line1 = b1 & ~uintptr_t{63};
      // Lines that start inside either region (a region's last half line may go unasked).
      pf.left = ((h1 - h0) * 32 + 63) / 64;
      const int64_t every = (g1 - g0) * tiles / pf.left / 2 * 2;  // even: tile1x16 steps 2
      pf.every = every > 2 ? every : 2;
    }
    int64_t m = 0;
    for (; m < m4; m += 4) tile4x16<Vnni>(a, m, nb, k4, g0, g1, part + m * 16, first, last, pf);
    for (; m < a.batch; ++m) tile1x16<Vnni>(a, m, nb, k4, g0, g1, part + m * 16, first, last, pf);
  }
}

// The ymm path's tasks (pairs of blocks), each over K range [gs0, gs1) per pass; a thread
// claims its next task before starting the current one, so that it knows which weights to
// prefetch. Each output is computed by one thread in a fixed order, whatever the count.
template <bool Vnni>
void ymm_pass(const Int8Args& a, int64_t k4, int64_t npairs, int64_t gs0, int64_t gs1, int32_t* part_base,
              bool per_task, std::atomic<int64_t>& counter) {
  const int64_t stride = a.batch * 16;
  int32_t* own = part_base + static_cast<int64_t>(omp_get_thread_num()) * stride;
  int64_t t = counter.fetch_add(1, std::memory_order_relaxed);
  while (t < npairs) {
    const int64_t tn = counter.fetch_add(1, std::memory_order_relaxed);
    pair_task<Vnni>(a, 2 * t, k4, gs0, gs1, per_task ? part_base + t * stride : own, tn < npairs ? 2 * tn : -1);
    t = tn;
  }
}


// ---- AVX-512 VNNI (zmm) ----------------------------------------------------------------
// On CPUs with AVX512-VNNI, vpdpbusd on zmm does 16 channels x 4 k per instruction, twice
// the ymm form. Only the functions below carry the target attribute (they are static, so no
// AVX-512 code is ever shared with the other paths); the file itself stays -mavx2 -mfma.
// Sums are the same exact integers as the maddubs and ymm paths.
#define DC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

// K chunk in groups of 4: a task's repacked weights (kZChunk * 128 bytes = 16 KiB) plus
// the 8 activation rows of a tile (4 KiB) stay in L1 (256 measured the same).
constexpr int64_t kZChunk = 128;

inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// acc += dot4(u8 x, s8 w) per int32 lane. Inline asm, as dot4 above: with the intrinsic,
// GCC copies every accumulator through a second register each iteration.
DC_AVX512 inline __m512i zdot4(__m512i acc, __m512i x, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
  return acc;
}

// M batch rows x NZ zmm (16 channels each) over the repacked chunk wbuf (NZ * 64 bytes per
// k-group). Partial sums carry over between chunks in part (32 int32 per row).
template <int M, int NZ>
DC_AVX512 void ztile(const Int8Args& a, int64_t m0, int64_t o0, const int8_t* wbuf, int64_t g0, int64_t g1,
                     int64_t kp, int32_t* part, bool first, bool last) {
  __m512i acc[M][NZ];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
    for (int z = 0; z < NZ; ++z)
      acc[m][z] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(part + m * 32 + z * 16);
  const uint8_t* x = a.xq + m0 * kp;
  const int8_t* w = wbuf;
  for (int64_t g = g0; g < g1; ++g, w += NZ * 64) {
    __m512i wv[NZ];
#pragma GCC unroll 2
    for (int z = 0; z < NZ; ++z) wv[z] = _mm512_load_si512(w + z * 64);
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
      const __m512i xv = _mm512_set1_epi32(load_i32(x + m * kp + g * 4));
#pragma GCC unroll 2
      for (int z = 0; z < NZ; ++z) acc[m][z] = zdot4(acc[m][z], xv, wv[z]);
    }
  }
  if (!last) {
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
      for (int z = 0; z < NZ; ++z) _mm512_storeu_si512(part + m * 32 + z * 16, acc[m][z]);
    return;
  }
  for (int m = 0; m < M; ++m)
    for (int z = 0; z < NZ; ++z) {
      finish8(a, m0 + m, o0 + z * 16, _mm512_castsi512_si256(acc[m][z]));
      finish8(a, m0 + m, o0 + z * 16 + 8, _mm512_extracti64x4_epi64(acc[m][z], 1));
    }
}

// Copies k-groups [g0, g1) of the NZ * 2 blocks from nb0 into wbuf so that each zmm
// (two 8-channel blocks at one k-group) is one aligned 64-byte load.
template <int NZ>
DC_AVX512 void zrepack(const Int8Args& a, int64_t nb0, int64_t k4, int64_t g0, int64_t g1, int8_t* wbuf) {
  const int8_t* src[2 * NZ];
  for (int b = 0; b < 2 * NZ; ++b) src[b] = a.packed + (nb0 + b) * k4 * 32;
  for (int64_t g = g0; g < g1; ++g) {
    int8_t* d = wbuf + (g - g0) * NZ * 64;
#pragma GCC unroll 4
    for (int b = 0; b < 2 * NZ; ++b)
      _mm256_store_si256(reinterpret_cast<__m256i*>(d + b * 32),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[b] + g * 32)));
  }
}

// K-groups [gs0, gs1) of one task (NZ * 16 channels from block nb0) for every batch row;
// part holds the task's partial sums between calls.
template <int NZ>
DC_AVX512 void ztask(const Int8Args& a, int64_t nb0, int64_t k4, int64_t gs0, int64_t gs1, int32_t* part,
                     int8_t* wbuf) {
  const int64_t kp = k4 * 4;
  const int64_t o0 = nb0 * 8;
  const int64_t m8 = a.batch / 8 * 8;
  for (int64_t g0 = gs0; g0 < gs1; g0 += kZChunk) {
    const int64_t g1 = g0 + kZChunk < gs1 ? g0 + kZChunk : gs1;
    const bool first = g0 == 0, last = g1 == k4;
    zrepack<NZ>(a, nb0, k4, g0, g1, wbuf);
    int64_t m = 0;
    for (; m < m8; m += 8) ztile<8, NZ>(a, m, o0, wbuf, g0, g1, kp, part + m * 32, first, last);
    if (m + 4 <= a.batch) {
      ztile<4, NZ>(a, m, o0, wbuf, g0, g1, kp, part + m * 32, first, last);
      m += 4;
    }
    for (; m < a.batch; ++m) ztile<1, NZ>(a, m, o0, wbuf, g0, g1, kp, part + m * 32, first, last);
  }
}

DC_AVX512 void gemm_int8_zmm(const Int8Args& a, int nthreads) {
  const int64_t k4 = (a.k + 3) / 4;
  const int64_t npairs = (a.n + 15) / 16;
  const int64_t nquads = (npairs + 1) / 2;  // tasks of 32 channels (the last may have 16)
  int64_t super = kXqL2Bytes / (a.batch * 4) / kZChunk * kZChunk;
  if (super < kZChunk) super = kZChunk;
  const bool split = super < k4;
  // Partial sums [batch][32]: per thread, or per task when K is split; then the repacked
  // weight chunk per thread.
  const size_t pbytes = (static_cast<size_t>(a.batch) * 32 * sizeof(int32_t) + 63) / 64 * 64;
  const size_t wbytes = static_cast<size_t>(kZChunk) * 128;
  const size_t nparts = static_cast<size_t>(split ? nquads : nthreads);
  char* mem = static_cast<char*>(std::aligned_alloc(64, pbytes * nparts + wbytes * static_cast<size_t>(nthreads)));
  if (mem == nullptr) throw std::bad_alloc();
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    const int me = omp_get_thread_num();
    int8_t* wbuf = reinterpret_cast<int8_t*>(mem + pbytes * nparts + wbytes * static_cast<size_t>(me));
    for (int64_t gs0 = 0; gs0 < k4; gs0 += super) {
      const int64_t gs1 = split && gs0 + super < k4 ? gs0 + super : k4;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < nquads; ++t) {
        int32_t* part = reinterpret_cast<int32_t*>(mem + pbytes * static_cast<size_t>(split ? t : me));
        if (2 * t + 1 < npairs) ztask<2>(a, 4 * t, k4, gs0, gs1, part, wbuf);
        else ztask<1>(a, 4 * t, k4, gs0, gs1, part, wbuf);
      }
      if (!split) break;
    }
  }
  std::free(mem);
}

}  // namespace

void int8_row_range_avx2(const float* x, int64_t k, float* lo_out, float* hi_out) {
  // _mm256_min_ps(v, lo) is v < lo ? v : lo lane by lane, the scalar twin's expression, so
  // NaN is skipped the same way and -0 never replaces +0; the lanes then hold only values
  // the scalar loop compares too, and min / max over them do not depend on the order.
  __m256 lo0 = _mm256_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0;
  __m256 hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    lo0 = _mm256_min_ps(v0, lo0); hi0 = _mm256_max_ps(v0, hi0);
    lo1 = _mm256_min_ps(v1, lo1); hi1 = _mm256_max_ps(v1, hi1);
    lo2 = _mm256_min_ps(v2, lo2); hi2 = _mm256_max_ps(v2, hi2);
    lo3 = _mm256_min_ps(v3, lo3); hi3 = _mm256_max_ps(v3, hi3);
  }
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    lo0 = _mm256_min_ps(v, lo0);
    hi0 = _mm256_max_ps(v, hi0);
  }
  lo0 = _mm256_min_ps(_mm256_min_ps(lo0, lo1), _mm256_min_ps(lo2, lo3));
  hi0 = _mm256_max_ps(_mm256_max_ps(hi0, hi1), _mm256_max_ps(hi2, hi3));
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo0);
  _mm256_store_ps(h, hi0);
  float lo = 0.0f, hi = 0.0f;
  for (int j = 0; j < 8; ++j) {
    lo = l[j] < lo ? l[j] : lo;
    hi = h[j] > hi ? h[j] : hi;
  }
  for (; i < k; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  *lo_out = lo;
  *hi_out = hi;
}

void int8_quantize_row_avx2(const float* x, int64_t k, float inv_scale, int32_t zp, uint8_t* q) {
  const int64_t kp = (k + 3) / 4 * 4;
  const __m256 inv = _mm256_set1_ps(inv_scale);
  const __m256i z = _mm256_set1_epi32(zp);
  int64_t i = 0;
  // clamp(v, 0, 127) for every int32 v, 32 at a time: packs_epi32 keeps the sign and caps
  // at 32767, packus_epi16 maps negatives to 0 and caps at 255, min_epu8 caps at 127.
  // The packs interleave 128-bit lanes; one permute restores the order.
  const __m256i top = _mm256_set1_epi8(127);
  for (; i + 32 <= k; i += 32) {
    const __m256i v0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv)), z);
    const __m256i v1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv)), z);
    const __m256i v2 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), inv)), z);
    const __m256i v3 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), inv)), z);
    const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
    const __m256i ordered = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_min_epu8(ordered, top));
  }
  const __m256i lo = _mm256_setzero_si256(), hi = _mm256_set1_epi32(127);
  for (; i + 8 <= k; i += 8) {
    __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv)), z);
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(w16, w16));
  }
  for (; i < k; ++i) {
    int32_t v = round_to_int(x[i] * inv_scale) + zp;
    v = v < 0 ? 0 : (v > 127 ? 127 : v);
    q[i] = static_cast<uint8_t>(v);
  }
  for (; i < kp; ++i) q[i] = 0;
}

bool int8_vnni_supported() {
  // The {vex} vpdpbusd form needs binutils >= 2.36, which any GCC 11+ toolchain has.
  static const bool ok = __builtin_cpu_supports("avxvnni");
  return ok;
}

void gemm_int8_avx2(const Int8Args& a, int nthreads, bool vnni, bool zmm) {
  // AVX512-VNNI: from 4 batch rows up, where a tile of 8 (or 4) rows reuses each repacked
  // weight vector; below, the ymm path's 1-row tile is as fast.
  if (zmm && a.batch >= 4) {
    gemm_int8_zmm(a, nthreads);
    return;
  }
  const int64_t k4 = (a.k + 3) / 4;
  const int64_t npairs = (a.n + 15) / 16;  // int8_pack pads the channels to a multiple of 16
  // A task is a pair of 8-channel blocks over the whole batch: its weights are read from
  // memory once and reused from L1 by every batch row. The quantized activations it reads
  // stay in L2 from one task to the next up to kXqL2Bytes; past that, K is cut into
  // passes that each fit, with a barrier between passes and partial sums kept per task.
  // (Past 256 rows even one chunk's activations exceed the budget: no split then.)
  int64_t super = kXqL2Bytes / (a.batch * 4) / kChunk * kChunk;
  const bool split = super >= kChunk && super < k4;
  if (!split) super = k4;
  const int64_t npass = (k4 + super - 1) / super;
  std::unique_ptr<std::atomic<int64_t>[]> counters(new std::atomic<int64_t>[static_cast<size_t>(npass)]);
  for (int64_t p = 0; p < npass; ++p) counters[p].store(0, std::memory_order_relaxed);
  std::unique_ptr<int32_t[]> task_parts;
  if (split) task_parts.reset(new int32_t[static_cast<size_t>(npairs * a.batch * 16)]);
  int32_t* parts = split ? task_parts.get() : a.part;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    for (int64_t p = 0; p < npass; ++p) {
      const int64_t gs0 = p * super, gs1 = gs0 + super < k4 ? gs0 + super : k4;
      if (vnni) ymm_pass<true>(a, k4, npairs, gs0, gs1, parts, split, counters[p]);
      else ymm_pass<false>(a, k4, npairs, gs0, gs1, parts, split, counters[p]);
      if (split) {
#pragma omp barrier
      }
    }
  }
}

}  // namespace kernels
}  // namespace deepcomp
