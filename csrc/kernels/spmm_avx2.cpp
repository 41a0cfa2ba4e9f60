// AVX2 + FMA sparse matmul (fp32 values or codebook codes). Compiled with -mavx2 -mfma
// and only entered when the CPU has both. Everything here is static or in an anonymous
// namespace and uses raw pointers and intrinsics, so no inline function shared with
// the scalar files is ever instantiated with AVX2 code.
//
// Batch 1 (SpMV): the cost is reading the weights once, so each row streams its column
// indices and codes sequentially, gathers 8 inputs at a time (_mm256_i32gather_ps) and
// looks the codes up in the codebook kept in registers (one _mm256_permutevar8x32_ps
// per 8 entries, blended on the code's high bits); no fp32 copy of W is ever formed.
// Batch > 1 (SpMM): X is transposed into blocks of up to 32 batch columns so that each
// nonzero is read once per block and applied with FMAs over contiguous batch vectors.
// On CPUs with AVX-512 (F, BW, VL), blocks of 16 or 32 columns take a zmm path (one or
// two zmm per nonzero) built from static functions with a target attribute; the file is
// still compiled -mavx2 -mfma and DEEPCOMP_NO_AVX512=1 keeps everything on AVX2.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

// Value source: fp32 array, codebook with K <= 8 / 16 / 32 held in registers, or a
// gather from the codebook for larger K.
enum Lookup { kValues = 0, kCb8 = 8, kCb16 = 16, kCb32 = 32, kCbGather = 1 };

struct Codebook32 {
  __m256 c[4];
};

inline Codebook32 load_codebook(const float* cb, int32_t k) {
  alignas(32) float pad[32] = {0};
  for (int32_t i = 0; i < k && i < 32; ++i) pad[i] = cb[i];
  Codebook32 r;
  for (int i = 0; i < 4; ++i) r.c[i] = _mm256_load_ps(pad + 8 * i);
  return r;
}

inline __m256i load_idx8(const uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_idx8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

template <int L>
inline __m256 values8(const SparseArgs& a, int64_t p, const Codebook32& cb) {
  if constexpr (L == kValues) {
    return _mm256_loadu_ps(a.values + p);
  } else {
    const __m256i code = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.codes + p)));
    if constexpr (L == kCb8) {
      return _mm256_permutevar8x32_ps(cb.c[0], code);
    } else if constexpr (L == kCb16) {
      // blendv selects on the sign bit: move code bit 3 there.
      const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
      return _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb.c[0], code),
                              _mm256_permutevar8x32_ps(cb.c[1], code), hi);
    } else if constexpr (L == kCb32) {
      const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
      const __m256 b4 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 27));
      const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb.c[0], code),
                                         _mm256_permutevar8x32_ps(cb.c[1], code), b3);
      const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(cb.c[2], code),
                                         _mm256_permutevar8x32_ps(cb.c[3], code), b3);
      return _mm256_blendv_ps(lo, hi, b4);
    } else {
      return _mm256_i32gather_ps(a.codebook, code, 4);
    }
  }
}

template <int L>
inline float value1(const SparseArgs& a, int64_t p) {
  if constexpr (L == kValues) return a.values[p];
  else return a.codebook[a.codes[p]];
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float finish(const SparseArgs& a, int64_t r, float acc) {
  float out = acc + (a.bias ? a.bias[r] : 0.0f);
  return a.relu ? (out > 0.0f ? out : 0.0f) : out;
}

// ---- batch 1 -------------------------------------------------------------------------

constexpr int64_t kAhead = 1024;

template <typename Index, int L>
float spmv_row(const SparseArgs& a, const Index* idx, int64_t p0, int64_t p1, const Codebook32& cb) {
  const float* x = a.x;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t p = p0;
  // Four independent gathers in flight hide their latency behind each other.
  for (; p + 32 <= p1; p += 32) {
    // The weight streams come from memory once per call; the hardware prefetcher alone
    // leaves the gathers waiting on them. kAhead nonzeros ahead is a few hundred cycles.
    _mm_prefetch(reinterpret_cast<const char*>(idx + p + kAhead), _MM_HINT_T0);
    if constexpr (sizeof(Index) == 4) _mm_prefetch(reinterpret_cast<const char*>(idx + p + kAhead + 16), _MM_HINT_T0);
    if constexpr (L == kValues) {
      _mm_prefetch(reinterpret_cast<const char*>(a.values + p + kAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.values + p + kAhead + 16), _MM_HINT_T0);
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(a.codes + p + kAhead), _MM_HINT_T0);
    }
    const __m256 g0 = _mm256_i32gather_ps(x, load_idx8(idx + p), 4);
    const __m256 g1 = _mm256_i32gather_ps(x, load_idx8(idx + p + 8), 4);
    const __m256 g2 = _mm256_i32gather_ps(x, load_idx8(idx + p + 16), 4);
    const __m256 g3 = _mm256_i32gather_ps(x, load_idx8(idx + p + 24), 4);
    acc0 = _mm256_fmadd_ps(values8<L>(a, p, cb), g0, acc0);
    acc1 = _mm256_fmadd_ps(values8<L>(a, p + 8, cb), g1, acc1);
    acc2 = _mm256_fmadd_ps(values8<L>(a, p + 16, cb), g2, acc2);
    acc3 = _mm256_fmadd_ps(values8<L>(a, p + 24, cb), g3, acc3);
  }
  for (; p + 8 <= p1; p += 8) {
    const __m256 g0 = _mm256_i32gather_ps(x, load_idx8(idx + p), 4);
    acc0 = _mm256_fmadd_ps(values8<L>(a, p, cb), g0, acc0);
  }
  float s = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; p < p1; ++p) s += value1<L>(a, p) * x[idx[p]];
  return s;
}

// ---- batch 1 on zmm --------------------------------------------------------------------
// Where AVX-512 (F, BW, VL) is usable, batch 1 gathers 16 inputs per instruction and looks
// 16 codes up with one vpermps / vpermt2ps (the ymm path needs four permutes and three
// blends per 8): with the weights in cache the ymm kernel is bound by those ports, not by
// memory (bench_kernels, 4096x9216 at 90 %, 1 thread: 1.5-1.8 ms on ymm, 1.1-1.4 on zmm).
// Only these functions carry the target attribute (the file stays -mavx2 -mfma);
// DEEPCOMP_NO_AVX512=1 keeps batch 1 on ymm.
#define DC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))

// Runs f(c) for chunks c in [0, n) through parallel_chunks (threads.cpp). The
// lambdas call the target-attributed (zmm) functions; they are not inlined into them.

struct ZvCodebook {
  __m512 c0, c1;
};

template <int L>
DC_AVX512 ZvCodebook zv_codebook(const SparseArgs& a) {
  ZvCodebook r{_mm512_setzero_ps(), _mm512_setzero_ps()};
  if constexpr (L == kCb8 || L == kCb16 || L == kCb32) {
    alignas(64) float pad[32] = {0};
    for (int32_t i = 0; i < a.k && i < 32; ++i) pad[i] = a.codebook[i];
    r.c0 = _mm512_load_ps(pad);
    r.c1 = _mm512_load_ps(pad + 16);
  }
  return r;
}

// 16 column indices from p (lanes outside m zero; masked lanes are never read, so a tail
// may end at the array's end).
DC_AVX512 inline __m512i zv_idx(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
}
DC_AVX512 inline __m512i zv_idx(const int32_t* p, __mmask16 m) { return _mm512_maskz_loadu_epi32(m, p); }
DC_AVX512 inline __m512i zv_idx(const uint16_t* p) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
DC_AVX512 inline __m512i zv_idx(const int32_t* p) { return _mm512_loadu_si512(p); }

// Values of nonzeros [p, p + 16) in the lanes of m (others: anything finite or not; the
// callers merge with m).
template <int L>
DC_AVX512 inline __m512 zv_values(const SparseArgs& a, int64_t p, __mmask16 m, const ZvCodebook& cb) {
  if constexpr (L == kValues) {
    return _mm512_maskz_loadu_ps(m, a.values + p);
  } else {
    const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, a.codes + p));
    if constexpr (L == kCb8 || L == kCb16) return _mm512_permutexvar_ps(code, cb.c0);
    else if constexpr (L == kCb32) return _mm512_permutex2var_ps(cb.c0, code, cb.c1);
    else return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, code, a.codebook, 4);
  }
}
template <int L>
DC_AVX512 inline __m512 zv_values(const SparseArgs& a, int64_t p, const ZvCodebook& cb) {
  if constexpr (L == kValues) {
    return _mm512_loadu_ps(a.values + p);
  } else {
    const __m512i code = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.codes + p)));
    if constexpr (L == kCb8 || L == kCb16) return _mm512_permutexvar_ps(code, cb.c0);
    else if constexpr (L == kCb32) return _mm512_permutex2var_ps(cb.c0, code, cb.c1);
    else return _mm512_i32gather_ps(code, a.codebook, 4);
  }
}

// Prefetches the index and value streams of the 64 nonzeros from q.
template <typename Index, int L, int Hint>
inline void zv_prefetch64(const SparseArgs& a, const Index* idx, int64_t q) {
  for (int64_t o = 0; o < 64 * static_cast<int64_t>(sizeof(Index)); o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(idx + q) + o, static_cast<_mm_hint>(Hint));
  if constexpr (L == kValues) {
    for (int64_t o = 0; o < 256; o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(a.values + q) + o, static_cast<_mm_hint>(Hint));
  } else {
    _mm_prefetch(reinterpret_cast<const char*>(a.codes + q), static_cast<_mm_hint>(Hint));
  }
}

// Accumulates nonzeros from p on (up to pe) into acc while their columns are below bound
// and returns where it stopped. Indices sorted within the row make that the row's part
// in [.., bound); unsorted ones only stop early, so that every nonzero is still taken
// exactly once over increasing bounds ending at n_in.
// Blocked (Bounded): the next rows' weights are meanwhile prefetched to L2, 64 nonzeros of
// [*pf, pfe) per 64 taken; otherwise the row's own streams kAhead ahead into L1.
template <typename Index, int L, bool Bounded>
DC_AVX512 int64_t zv_segment(const SparseArgs& a, const Index* idx, int64_t p, int64_t pe, int64_t bound,
                              const ZvCodebook& cb, __m512 acc[4], int64_t* pf, int64_t pfe) {
  const float* x = a.x;
  for (; p + 64 <= pe && (!Bounded || static_cast<int64_t>(idx[p + 63]) < bound); p += 64) {
    if constexpr (Bounded) {
      if (*pf < pfe) {
        zv_prefetch64<Index, L, _MM_HINT_T1>(a, idx, *pf);
        *pf += 64;
      }
    } else {
      zv_prefetch64<Index, L, _MM_HINT_T0>(a, idx, p + kAhead);
    }
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m512 g = _mm512_i32gather_ps(zv_idx(idx + p + 16 * u), x, 4);
      acc[u] = _mm512_fmadd_ps(zv_values<L>(a, p + 16 * u, cb), g, acc[u]);
    }
  }
  // The rest of the row (under 64) or the group of 64 that crosses the bound, in one pass
  // whose compares do not wait on each other (a loop of 16 at a time measured 3 % slower
  // at 4096x25088): the nonzeros before the first one at or past the bound.
  const int64_t n = pe - p;
  if (n > 0) {
    const uint64_t live = n >= 64 ? ~0ull : (1ull << n) - 1u;
    const __m512i vbound = _mm512_set1_epi32(static_cast<int32_t>(bound));
    __m512i ix[4];
    uint64_t below = 0;
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __mmask16 in = static_cast<__mmask16>(live >> (16 * u));
      ix[u] = zv_idx(idx + p + 16 * u, in);
      below |= static_cast<uint64_t>(_mm512_mask_cmplt_epi32_mask(in, ix[u], vbound)) << (16 * u);
    }
    const int take = ~below ? __builtin_ctzll(~below) : 64;
    const uint64_t taken = take < 64 ? (1ull << take) - 1u : ~0ull;
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __mmask16 m = static_cast<__mmask16>(taken >> (16 * u));
      if (!m) break;
      const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ix[u], x, 4);
      acc[u] = _mm512_mask3_fmadd_ps(zv_values<L>(a, p + 16 * u, m, cb), g, acc[u], m);
    }
    p += take;
  }
  return p;
}

// Rows per chunk of the blocked kernel: their weights (16 x ~2,500 nonzeros x 3 bytes at
// 4096x25088, 90 %) sit in L2 while the chunk is walked once per column block.
constexpr int64_t kZvRows = 16;
// x slices of at most 32 KiB stay in L1 next to the weight streams. Blocking pays once x
// outgrows 48 KiB (measured: break-even at 12288 columns; 4096x9216 whole is 15-20 % faster).
constexpr int64_t kZvSliceBytes = 32 << 10;
constexpr int64_t kZvBlockAbove = 48 << 10;

template <typename Index, int L>
DC_AVX512 void zspmv_rows(const SparseArgs& a, const Index* idx, const ZvCodebook& cb, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    zv_segment<Index, L, false>(a, idx, a.indptr[r], a.indptr[r + 1], a.n_in, cb, acc, nullptr, 0);
    const __m512 s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    a.y[r] = finish(a, r, _mm512_reduce_add_ps(s));
  }
}

// Short rows (LeNet-5's fc1: 800 columns, 64 nonzeros a row): the row-by-row loop above
// spends more on each row's tail masks, compares and horizontal sum than on its four
// gathers. Here the products of all the chunk's nonzeros are formed first in one plain
// loop of gathers (no row boundaries, no masks but the last), into a per-thread buffer in
// L1; then each row sums its own contiguous run of products. On the Zen 4 VM, fc1 at
// batch 1: 21 us -> 15 us in a standalone loop over its real weights. Each row's sum has a
// fixed order whatever the chunking, so results do not depend on the thread count.
constexpr int64_t kZvStreamMaxRowNnz = 256;  // average nonzeros a row, at most, to stream

float* zv_stream_scratch(int64_t n) {
  thread_local float* buf = nullptr;
  thread_local int64_t cap = 0;
  if (cap < n) {
    std::free(buf);
    cap = n + 1024;
    buf = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((cap * 4 + 63) / 64 * 64)));
    if (!buf) cap = 0;
  }
  return buf;
}

template <typename Index, int L>
DC_AVX512 void zspmv_rows_stream(const SparseArgs& a, const Index* idx, const ZvCodebook& cb, int64_t r0,
                                 int64_t r1) {
  const int64_t p0 = a.indptr[r0], p1 = a.indptr[r1];
  float* prod = zv_stream_scratch(p1 - p0 + 16);
  if (!prod) {  // out of memory: the row-by-row loop needs no buffer
    zspmv_rows<Index, L>(a, idx, cb, r0, r1);
    return;
  }
  const float* x = a.x;
  int64_t p = p0;
  for (; p + 32 <= p1; p += 32) {
    const __m512 g0 = _mm512_i32gather_ps(zv_idx(idx + p), x, 4);
    const __m512 g1 = _mm512_i32gather_ps(zv_idx(idx + p + 16), x, 4);
    _mm512_storeu_ps(prod + (p - p0), _mm512_mul_ps(zv_values<L>(a, p, cb), g0));
    _mm512_storeu_ps(prod + (p - p0) + 16, _mm512_mul_ps(zv_values<L>(a, p + 16, cb), g1));
  }
  for (; p < p1; p += 16) {
    const int64_t n = p1 - p;
    const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, zv_idx(idx + p, m), x, 4);
    _mm512_mask_storeu_ps(prod + (p - p0), m, _mm512_mul_ps(zv_values<L>(a, p, m, cb), g));
  }
  for (int64_t r = r0; r < r1; ++r) {
    int64_t q = a.indptr[r] - p0;
    const int64_t qe = a.indptr[r + 1] - p0;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; q + 32 <= qe; q += 32) {
      s0 = _mm512_add_ps(s0, _mm512_loadu_ps(prod + q));
      s1 = _mm512_add_ps(s1, _mm512_loadu_ps(prod + q + 16));
    }
    if (q + 16 <= qe) {
      s0 = _mm512_add_ps(s0, _mm512_loadu_ps(prod + q));
      q += 16;
    }
    if (q < qe) s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (qe - q)) - 1u), prod + q));
    a.y[r] = finish(a, r, _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
  }
}

// Rows [r0, r1) (at most kZvRows) over nb column blocks of width bw, each row resuming
// where the previous block left it; the next rows' weights (up to row r2) are prefetched.
template <typename Index, int L>
DC_AVX512 void zspmv_chunk_blocked(const SparseArgs& a, const Index* idx, const ZvCodebook& cb, int64_t nb,
                                   int64_t bw, int64_t r0, int64_t r1, int64_t r2) {
  int64_t pos[kZvRows];
  __m512 part[kZvRows];
  for (int64_t r = r0; r < r1; ++r) {
    pos[r - r0] = a.indptr[r];
    part[r - r0] = _mm512_setzero_ps();
  }
  int64_t pf = a.indptr[r1];
  const int64_t pfe = a.indptr[r2];
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t bound = b + 1 < nb ? (b + 1) * bw : a.n_in;
    for (int64_t r = r0; r < r1; ++r) {
      __m512 acc[4] = {part[r - r0], _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      pos[r - r0] = zv_segment<Index, L, true>(a, idx, pos[r - r0], a.indptr[r + 1], bound, cb, acc, &pf, pfe);
      part[r - r0] = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    }
  }
  for (int64_t r = r0; r < r1; ++r) a.y[r] = finish(a, r, _mm512_reduce_add_ps(part[r - r0]));
}

template <typename Index, int L>
DC_AVX512 void zspmv(const SparseArgs& a, const Index* idx, int nthreads) {
  const ZvCodebook cb = zv_codebook<L>(a);
  const int64_t rows = a.n_out, n_in = a.n_in;
  if (n_in * static_cast<int64_t>(sizeof(float)) <= kZvBlockAbove) {
    constexpr int64_t kRows = 32;
    const bool stream = a.indptr[rows] <= kZvStreamMaxRowNnz * rows;
    for_chunks(nthreads, (rows + kRows - 1) / kRows, [&](int64_t c) {
      const int64_t r1 = (c + 1) * kRows < rows ? (c + 1) * kRows : rows;
      if (stream) zspmv_rows_stream<Index, L>(a, idx, cb, c * kRows, r1);
      else zspmv_rows<Index, L>(a, idx, cb, c * kRows, r1);
    });
    return;
  }
  // Column blocks of equal width (the last ends at n_in); each chunk of rows is walked
  // once per block, every row resuming where the previous block left it.
  const int64_t nb = (n_in * static_cast<int64_t>(sizeof(float)) + kZvSliceBytes - 1) / kZvSliceBytes;
  const int64_t bw = (n_in + nb - 1) / nb;
  // Tasks of 4 chunks: a chunk's prefetch of the next one is wasted only where a task ends.
  constexpr int64_t kTaskRows = 4 * kZvRows;
  for_chunks(nthreads, (rows + kTaskRows - 1) / kTaskRows, [&](int64_t t) {
    const int64_t end = (t + 1) * kTaskRows < rows ? (t + 1) * kTaskRows : rows;
    for (int64_t r0 = t * kTaskRows; r0 < end; r0 += kZvRows) {
      const int64_t r1 = r0 + kZvRows < rows ? r0 + kZvRows : rows;
      const int64_t r2 = r1 + kZvRows < rows ? r1 + kZvRows : rows;
      zspmv_chunk_blocked<Index, L>(a, idx, cb, nb, bw, r0, r1, r2);
    }
  });
}

template <typename Index, int L>
void spmv(const SparseArgs& a, const Index* idx, int nthreads) {
  // No column slicing on ymm: this path is bound by the gather and permute ports, and x
  // in L1 instead of L2 made it only 8 % faster in a standalone loop, less than slicing
  // costs (zspmv's slices pay on zmm, where the same change is 35 %).
  if (avx512_usable(/*need_vnni=*/false)) {
    zspmv<Index, L>(a, idx, nthreads);
    return;
  }
  const Codebook32 cb = L == kValues ? Codebook32{} : load_codebook(a.codebook, a.k);
  const int64_t rows = a.n_out;
  constexpr int64_t kRows = 32;
  for_chunks(nthreads, (rows + kRows - 1) / kRows, [&](int64_t c) {
    const int64_t r1 = (c + 1) * kRows < rows ? (c + 1) * kRows : rows;
    for (int64_t r = c * kRows; r < r1; ++r)
      a.y[r] = finish(a, r, spmv_row<Index, L>(a, idx, a.indptr[r], a.indptr[r + 1], cb));
  });
}

// ---- batch > 1 -------------------------------------------------------------------------

constexpr int64_t kXAhead = 32;

inline int64_t block_width(int64_t batch) {
  const int64_t w = (batch + 7) / 8 * 8;
  return w < 32 ? w : 32;
}

// In-register transpose of an 8x8 float tile: r[i] becomes column i of the input rows.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// xblk[blk][c][j] = x[blk * bw + j][c], zero for j past the batch. Tiles of 8 batch rows x
// 8 columns go through registers: element by element, the strided stores cost about as
// much as the whole product for small layers (300x784 at batch 16: 8 of 30 us).
void transpose_blocks(const SparseArgs& a, float* xblk, int64_t bw, int nthreads) {
  const int64_t nblk = (a.batch + bw - 1) / bw;
  const int64_t n_in = a.n_in;
  const int64_t groups = bw / 8;  // bw is a multiple of 8
  const int64_t c8 = n_in / 8 * 8;
  // A copy of a few MB takes less than waking the team (0.1-0.2 ms with passive waiting
  // on the 2-vCPU VM: 4096x9216 at batch 16 went from about 1.5x to 1.6-1.7x on two threads
  // against one, alternating with torch CSR only), so only large inputs are transposed in
  // parallel.
  if (a.batch * n_in < (int64_t{1} << 22)) nthreads = 1;
  for_chunks(nthreads, nblk * groups, [&](int64_t t) {
    {
      const int64_t blk = t / groups, g = t % groups;
      float* dst = xblk + blk * n_in * bw + g * 8;
      const int64_t b0 = blk * bw + g * 8;
      const int64_t live = a.batch - b0 < 8 ? (a.batch - b0 > 0 ? a.batch - b0 : 0) : 8;
      const float* src[8];
      for (int64_t j = 0; j < 8; ++j) src[j] = j < live ? a.x + (b0 + j) * n_in : nullptr;
      for (int64_t c = 0; c < c8; c += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = src[j] ? _mm256_loadu_ps(src[j] + c) : _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (c + i) * bw, r[i]);
      }
      for (int64_t c = c8; c < n_in; ++c)
        for (int64_t j = 0; j < 8; ++j) dst[c * bw + j] = src[j] ? src[j][c] : 0.0f;
    }
  });
}

// One output row over a block of NV vectors of 8 batch columns, into out[8 * NV] (bias and
// ReLU applied). U independent accumulator sets so that consecutive FMAs into the same
// register do not wait on each other's latency; the U indices of a step come in one 8-byte
// (uint16) or U / 2 (int32) loads, split with shifts: one load fewer per nonzero (measured
// about 5% faster at batch 16). The value is looked up per nonzero (code, then codebook
// entry): a buffer of values looked up 8 at a time with values8 measured 15% slower here,
// its vpermps / blend chain for 32 entries costing more than the load it saves (the zmm
// path below does that lookup in one vpermt2ps, and there it pays).
template <typename Index, int L, int NV, int U>
void spmm_row(const SparseArgs& a, const Index* idx, const float* xb, int64_t bw, int64_t r, float* out) {
  static_assert(U == 2 || U == 4, "U indices per step");
  __m256 acc[U][NV];
  for (int u = 0; u < U; ++u)
    for (int j = 0; j < NV; ++j) acc[u][j] = _mm256_setzero_ps();
  const int64_t p1 = a.indptr[r + 1];
  int64_t p = a.indptr[r];
  for (; p + U <= p1; p += U) {
    uint64_t w[2] = {0, 0};
    __builtin_memcpy(w, idx + p, sizeof(Index) * U);
    for (int u = 0; u < U; ++u) {
      int64_t c;
      if constexpr (sizeof(Index) == 2) c = static_cast<int64_t>((w[0] >> (16 * u)) & 0xffffu);
      else c = static_cast<int64_t>(static_cast<uint32_t>(w[u / 2] >> (32 * (u & 1))));
      // Wide blocks: ask for the X rows kXAhead nonzeros early, so that the FMAs do not
      // wait on L2 latency (with 16 batch columns or fewer it measured no faster).
      if (NV > 2 && p + u + kXAhead < p1) {
        const float* xf = xb + static_cast<int64_t>(idx[p + u + kXAhead]) * bw;
        _mm_prefetch(reinterpret_cast<const char*>(xf), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(xf + 16), _MM_HINT_T0);
      }
      const __m256 v = _mm256_set1_ps(value1<L>(a, p + u));
      const float* xr = xb + c * bw;
      for (int j = 0; j < NV; ++j) acc[u][j] = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 8 * j), acc[u][j]);
    }
  }
  for (; p < p1; ++p) {
    const __m256 v = _mm256_set1_ps(value1<L>(a, p));
    const float* xr = xb + static_cast<int64_t>(idx[p]) * bw;
    for (int j = 0; j < NV; ++j) acc[0][j] = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 8 * j), acc[0][j]);
  }
  const __m256 bias = _mm256_set1_ps(a.bias ? a.bias[r] : 0.0f);
  const __m256 zero = _mm256_setzero_ps();
  for (int j = 0; j < NV; ++j) {
    __m256 s = acc[0][j];
    for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[u][j]);
    s = _mm256_add_ps(s, bias);
    if (a.relu) s = _mm256_max_ps(s, zero);
    _mm256_store_ps(out + 8 * j, s);
  }
}

// Rows are taken kGroupRows at a time and their outputs written batch row by batch row
// (contiguous): one row's outputs directly would be a column of y, whose elements lie
// n_out * 4 bytes apart, all in one L1 set when that is a multiple of 4 KiB.
constexpr int64_t kGroupRows = 16;
// A thread takes 4 groups (64 rows) at a time: with one group per grab the two threads'
// weight streams jump ahead every 16 rows and the hardware prefetchers keep re-learning
// them (bare zmm loop, 4096x9216 at batch 16: 1.6-1.7x on 2 threads with 16-row grabs,
// 1.85-1.9x with 64; static halves 1.85-1.92x, but do not adapt to a busy core).
constexpr int kGroupsPerGrab = 4;

template <typename Index, int L, int NV, int U>
void spmm_rows(const SparseArgs& a, const Index* idx, const float* xb, int64_t bw, int64_t b0, int64_t width,
               int nthreads) {
  const int64_t rows = a.n_out;
  constexpr int64_t kRowsPerChunk = kGroupRows * kGroupsPerGrab;
  for_chunks(nthreads, (rows + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t c) {
    const int64_t end = (c + 1) * kRowsPerChunk < rows ? (c + 1) * kRowsPerChunk : rows;
    for (int64_t r0 = c * kRowsPerChunk; r0 < end; r0 += kGroupRows) {
      alignas(32) float tile[kGroupRows][8 * NV];
      const int64_t r1 = r0 + kGroupRows < end ? r0 + kGroupRows : end;
      for (int64_t r = r0; r < r1; ++r) spmm_row<Index, L, NV, U>(a, idx, xb, bw, r, tile[r - r0]);
      for (int64_t j = 0; j < width; ++j) {
        float* y = a.y + (b0 + j) * a.n_out + r0;
        for (int64_t i = 0; i < r1 - r0; ++i) y[i] = tile[i][j];
      }
    }
  });
}

// Column-blocked variant: the nonzeros of rows [r0, r1) are visited one column block at
// a time (a.seg gives where each row enters each block), so the X slice they read,
// seg_cols * bw floats, stays in L1 across those rows. Partial sums live in `acc`.
template <typename Index, int L, int NV, int U>
void spmm_chunk_blocked(const SparseArgs& a, const Index* idx, const float* xb, int64_t bw, int64_t b0,
                        int64_t width, int64_t r0, int64_t r1, float* accbuf) {
  const int64_t rows = a.n_out;
  // Not kernels::seg_blocks: an inline function shared with the scalar files must not be
  // instantiated here with AVX2 code (the linker could keep this copy for everyone).
  const int64_t nb = (a.n_in + a.seg_cols - 1) / a.seg_cols;
  for (int64_t i = 0; i < (r1 - r0) * 8 * NV; ++i) accbuf[i] = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const int32_t* s0 = a.seg + b * (rows + 1);
    const int32_t* s1 = s0 + rows + 1;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t p = s0[r];
      const int64_t p1 = s1[r];
      if (p == p1) continue;
      float* am = accbuf + (r - r0) * 8 * NV;
      __m256 acc[U][NV];
      for (int j = 0; j < NV; ++j) acc[0][j] = _mm256_load_ps(am + 8 * j);
      for (int u = 1; u < U; ++u)
        for (int j = 0; j < NV; ++j) acc[u][j] = _mm256_setzero_ps();
      for (; p + U <= p1; p += U) {
        for (int u = 0; u < U; ++u) {
          const __m256 v = _mm256_set1_ps(value1<L>(a, p + u));
          const float* xr = xb + static_cast<int64_t>(idx[p + u]) * bw;
          for (int j = 0; j < NV; ++j) acc[u][j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * j), acc[u][j]);
        }
      }
      for (; p < p1; ++p) {
        const __m256 v = _mm256_set1_ps(value1<L>(a, p));
        const float* xr = xb + static_cast<int64_t>(idx[p]) * bw;
        for (int j = 0; j < NV; ++j) acc[0][j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * j), acc[0][j]);
      }
      for (int j = 0; j < NV; ++j) {
        __m256 t = acc[0][j];
        for (int u = 1; u < U; ++u) t = _mm256_add_ps(t, acc[u][j]);
        _mm256_store_ps(am + 8 * j, t);
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = r0; r < r1; ++r) {
    const float* am = accbuf + (r - r0) * 8 * NV;
    const __m256 bias = _mm256_set1_ps(a.bias ? a.bias[r] : 0.0f);
    alignas(32) float out[8 * NV];
    for (int j = 0; j < NV; ++j) {
      __m256 t = _mm256_add_ps(_mm256_load_ps(am + 8 * j), bias);
      if (a.relu) t = _mm256_max_ps(t, zero);
      _mm256_store_ps(out + 8 * j, t);
    }
    float* y = a.y + b0 * a.n_out + r;
    for (int64_t j = 0; j < width; ++j) y[j * a.n_out] = out[j];
  }
}

constexpr int64_t kRowChunk = 64;

template <typename Index, int L>
void spmm_blocked(const SparseArgs& a, const Index* idx, const float* xblk, int64_t bw, int nthreads) {
  const int64_t nblk = (a.batch + bw - 1) / bw;
  const int64_t rows = a.n_out;
  const int64_t nchunks = (rows + kRowChunk - 1) / kRowChunk;
  // One job, tasks = (batch block, row chunk): no barrier per column block.
  for_chunks(nthreads, nblk * nchunks, [&](int64_t t) {
    alignas(32) float accbuf[kRowChunk * 32];
    const int64_t blk = t / nchunks, c = t % nchunks;
    const float* xb = xblk + blk * a.n_in * bw;
    const int64_t b0 = blk * bw;
    const int64_t width = a.batch - b0 < bw ? a.batch - b0 : bw;
    const int64_t r0 = c * kRowChunk, r1 = r0 + kRowChunk < rows ? r0 + kRowChunk : rows;
    switch ((width + 7) / 8) {
      case 1: spmm_chunk_blocked<Index, L, 1, 4>(a, idx, xb, bw, b0, width, r0, r1, accbuf); break;
      case 2: spmm_chunk_blocked<Index, L, 2, 4>(a, idx, xb, bw, b0, width, r0, r1, accbuf); break;
      case 3: spmm_chunk_blocked<Index, L, 3, 2>(a, idx, xb, bw, b0, width, r0, r1, accbuf); break;
      default: spmm_chunk_blocked<Index, L, 4, 2>(a, idx, xb, bw, b0, width, r0, r1, accbuf); break;
    }
  });
}


// ---- AVX-512 (zmm), batch blocks of 16 or 32 columns ---------------------------------------
// A block row of the transposed X is one (or two) zmm, so a nonzero costs one broadcast
// of its value, one (or two) X loads and FMAs. The values of a run of nonzeros are first
// looked up 16 at a time into a small buffer (vpermps over the codebook in one or two
// zmm), so the inner loop does not load the code and then the codebook entry. Only these
// static functions carry the target attribute (DC_AVX512, above); the file stays -mavx2 -mfma.

constexpr int64_t kZVals = 256;  // nonzeros whose values are looked up at a time

struct ZCodebook {
  __m512 c0, c1;
};

template <int L>
DC_AVX512 ZCodebook zload_codebook(const SparseArgs& a) {
  ZCodebook r;
  if constexpr (L == kCb8 || L == kCb16 || L == kCb32) {
    alignas(64) float pad[32] = {0};
    for (int32_t i = 0; i < a.k && i < 32; ++i) pad[i] = a.codebook[i];
    r.c0 = _mm512_load_ps(pad);
    r.c1 = _mm512_load_ps(pad + 16);
  } else {
    r.c0 = _mm512_setzero_ps();
    r.c1 = _mm512_setzero_ps();
  }
  return r;
}

// out[0, n) = the values of nonzeros [p0, p0 + n), n <= kZVals; writes up to a multiple of 16.
template <int L>
DC_AVX512 void zvalues(const SparseArgs& a, int64_t p0, int64_t n, const ZCodebook& cb, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t m = n - i < 16 ? n - i : 16;
    const __mmask16 k = static_cast<__mmask16>((1u << m) - 1u);
    const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, a.codes + p0 + i));
    __m512 v;
    if constexpr (L == kCb8 || L == kCb16) v = _mm512_permutexvar_ps(code, cb.c0);
    else if constexpr (L == kCb32) v = _mm512_permutex2var_ps(cb.c0, code, cb.c1);
    else v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, code, a.codebook, 4);
    _mm512_store_ps(out + i, v);
  }
}

// One output row over a block of NV * 16 batch columns, into out[NV * 16] (bias and ReLU
// applied).
template <typename Index, int L, int NV>
DC_AVX512 void zspmm_row(const SparseArgs& a, const Index* idx, const float* xb, int64_t r, const ZCodebook& cb,
                         float* out) {
  constexpr int64_t bw = 16 * NV;
  constexpr int U = 4;
  alignas(64) float vbuf[kZVals];
  __m512 acc[U][NV];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) acc[u][j] = _mm512_setzero_ps();
  const int64_t p0 = a.indptr[r], p1 = a.indptr[r + 1];
  for (int64_t c0 = p0; c0 < p1; c0 += kZVals) {
    const int64_t c1 = c0 + kZVals < p1 ? c0 + kZVals : p1;
    const float* vals;
    if constexpr (L == kValues) {
      vals = a.values + c0;
    } else {
      zvalues<L>(a, c0, c1 - c0, cb, vbuf);
      vals = vbuf;
    }
    const Index* ip = idx + c0;
    const int64_t n = c1 - c0;
    // The index and code streams kAhead nonzeros ahead, as in the batch-1 kernel (measured
    // 2-7% faster; a non-temporal hint instead was 30% slower).
    for (int64_t q = 0; q < n * static_cast<int64_t>(sizeof(Index)); q += 64)
      _mm_prefetch(reinterpret_cast<const char*>(ip + kAhead) + q, _MM_HINT_T0);
    if constexpr (L != kValues)
      for (int64_t q = 0; q < n; q += 64) _mm_prefetch(reinterpret_cast<const char*>(a.codes + c0 + kAhead) + q, _MM_HINT_T0);
    int64_t i = 0;
    for (; i + U <= n; i += U) {
      // The U indices in one 8- or 16-byte load, split with shifts: one load fewer per
      // nonzero on a loop that is bound by loads (measured 10-20% faster).
      uint64_t w0, w1 = 0;
      __builtin_memcpy(&w0, ip + i, 8);
      if constexpr (sizeof(Index) == 4) __builtin_memcpy(&w1, ip + i + 2, 8);
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        int64_t c;
        if constexpr (sizeof(Index) == 2) c = static_cast<int64_t>((w0 >> (16 * u)) & 0xffffu);
        else c = static_cast<int64_t>(static_cast<uint32_t>((u < 2 ? w0 : w1) >> (32 * (u & 1))));
        const __m512 v = _mm512_set1_ps(vals[i + u]);
        const float* xr = xb + c * bw;
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[u][j] = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 16 * j), acc[u][j]);
      }
    }
    for (; i < n; ++i) {
      const __m512 v = _mm512_set1_ps(vals[i]);
      const float* xr = xb + static_cast<int64_t>(ip[i]) * bw;
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) acc[0][j] = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 16 * j), acc[0][j]);
    }
  }
  const __m512 bias = _mm512_set1_ps(a.bias ? a.bias[r] : 0.0f);
#pragma GCC unroll 2
  for (int j = 0; j < NV; ++j) {
    __m512 s = _mm512_add_ps(_mm512_add_ps(acc[0][j], acc[1][j]), _mm512_add_ps(acc[2][j], acc[3][j]));
    s = _mm512_add_ps(s, bias);
    if (a.relu) s = _mm512_max_ps(s, _mm512_setzero_ps());
    _mm512_store_ps(out + 16 * j, s);
  }
}

// Rows are taken kZRows at a time and their outputs written batch row by batch row, 64
// contiguous bytes each: storing one row's outputs directly is a column of y, whose
// elements lie n_out * 4 bytes apart, in the same L1 set when that is a multiple of 4 KiB
// (4096 outputs: 16 stores per row that miss; measured 0.25 of 1.3 ms at 4096x4096).
constexpr int64_t kZRows = 16;

// Rows [r0, r1) (at most kZRows) over a block of NV * 16 batch columns, written into y.
template <typename Index, int L, int NV>
DC_AVX512 void zspmm_group(const SparseArgs& a, const Index* idx, const float* xb, int64_t b0, int64_t width,
                           const ZCodebook& cb, int64_t r0, int64_t r1) {
  alignas(64) float tile[kZRows][16 * NV];
  for (int64_t r = r0; r < r1; ++r) zspmm_row<Index, L, NV>(a, idx, xb, r, cb, tile[r - r0]);
  const int64_t nr = r1 - r0;
  for (int64_t j = 0; j < width; ++j) {
    float* y = a.y + (b0 + j) * a.n_out + r0;
    for (int64_t i = 0; i < nr; ++i) y[i] = tile[i][j];
  }
}

template <typename Index, int L, int NV>
void zspmm_rows(const SparseArgs& a, const Index* idx, const float* xb, int64_t b0, int64_t width, int nthreads) {
  const ZCodebook cb = zload_codebook<L>(a);
  const int64_t rows = a.n_out;
  constexpr int64_t kRowsPerChunk = kZRows * kGroupsPerGrab;
  for_chunks(nthreads, (rows + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t c) {
    const int64_t end = (c + 1) * kRowsPerChunk < rows ? (c + 1) * kRowsPerChunk : rows;
    for (int64_t r0 = c * kRowsPerChunk; r0 < end; r0 += kZRows)
      zspmm_group<Index, L, NV>(a, idx, xb, b0, width, cb, r0, r0 + kZRows < end ? r0 + kZRows : end);
  });
}

template <typename Index, int L>
void spmm(const SparseArgs& a, const Index* idx, float* xblk, int nthreads) {
  const int64_t bw = block_width(a.batch);
  transpose_blocks(a, xblk, bw, nthreads);
  // Blocking pays only once the transposed X block no longer fits in L2: below that, its
  // short per-block segments cost more in loop overhead than the L1 hits save (measured:
  // 4096x25088 at batch 64, 50 ms blocked vs 80 plain; 4096x9216 at batch 16, 6.0 vs 4.2).
  if (a.seg && a.n_in * bw * static_cast<int64_t>(sizeof(float)) > kSpmmBlockAboveBytes) {
    spmm_blocked<Index, L>(a, idx, xblk, bw, nthreads);
    return;
  }
  const int64_t nblk = (a.batch + bw - 1) / bw;
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const float* xb = xblk + blk * a.n_in * bw;
    const int64_t b0 = blk * bw;
    const int64_t width = a.batch - b0 < bw ? a.batch - b0 : bw;
    const int nv = static_cast<int>((width + 7) / 8);
    // xblk is 64-byte aligned and bw a multiple of 16 here, so every X^T row is aligned.
    if ((bw == 16 || bw == 32) && avx512_usable(/*need_vnni=*/false)) {
      if (bw == 16) zspmm_rows<Index, L, 1>(a, idx, xb, b0, width, nthreads);
      else zspmm_rows<Index, L, 2>(a, idx, xb, b0, width, nthreads);
      continue;
    }
    switch (nv) {
      case 1: spmm_rows<Index, L, 1, 4>(a, idx, xb, bw, b0, width, nthreads); break;
      case 2: spmm_rows<Index, L, 2, 4>(a, idx, xb, bw, b0, width, nthreads); break;
      case 3: spmm_rows<Index, L, 3, 2>(a, idx, xb, bw, b0, width, nthreads); break;
      default: spmm_rows<Index, L, 4, 2>(a, idx, xb, bw, b0, width, nthreads); break;
    }
  }
}

template <typename Index, int L>
void run(const SparseArgs& a, const Index* idx, float* xblk, int nthreads) {
  if (a.batch == 1) spmv<Index, L>(a, idx, nthreads);
  else spmm<Index, L>(a, idx, xblk, nthreads);
}

template <typename Index>
void run_index(const SparseArgs& a, const Index* idx, float* xblk, int nthreads) {
  if (!a.codes) run<Index, kValues>(a, idx, xblk, nthreads);
  else if (a.k <= 8) run<Index, kCb8>(a, idx, xblk, nthreads);
  else if (a.k <= 16) run<Index, kCb16>(a, idx, xblk, nthreads);
  else if (a.k <= 32) run<Index, kCb32>(a, idx, xblk, nthreads);
  else run<Index, kCbGather>(a, idx, xblk, nthreads);
}

}  // namespace

int64_t spmm_avx2_scratch(const SparseArgs& a) {
  if (a.batch <= 1) return 0;
  const int64_t bw = block_width(a.batch);
  return (a.batch + bw - 1) / bw * bw * a.n_in;
}

void spmm_avx2(const SparseArgs& a, float* xblk, int nthreads) {
  if (a.idx16) run_index<uint16_t>(a, a.idx16, xblk, nthreads);
  else run_index<int32_t>(a, a.idx32, xblk, nthreads);
}

}  // namespace kernels
}  // namespace deepcomp
