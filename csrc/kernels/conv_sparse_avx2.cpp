// AVX2 + FMA (ymm) and AVX-512 (zmm) twins of the depthwise and sparse 1x1
// convolutions. The bodies are in conv_sparse_body.inc, included once per vector width;
// the zmm copy's functions carry the AVX-512 target attribute (the file itself is
// compiled -mavx2 -mfma and entered only when the CPU has them), and DEEPCOMP_NO_AVX512=1
// keeps everything on ymm. The two widths do the same operations per lane in the same
// order, so they agree bit for bit; the scalar twin differs by FMA rounding only.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

#define DC_AVX512_ATTR __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))

struct Ymm {
  using V = __m256;
  static constexpr int L = 8;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V set1(float f) { return _mm256_set1_ps(f); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static inline V div(V a, V b) { return _mm256_div_ps(a, b); }
  static inline V max(V a, V b) { return _mm256_max_ps(a, b); }
  static inline V min(V a, V b) { return _mm256_min_ps(a, b); }
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // The first n lanes from p (others zero; lanes past n are never read).
  static inline V load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static inline void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  // Lanes [b, e) from p (others zero; only those are read).
  static inline V load_lanes(const float* p, int b, int e) {
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(l, _mm256_set1_epi32(b - 1)),
                                       _mm256_cmpgt_epi32(_mm256_set1_epi32(e), l));
    return _mm256_maskload_ps(p, m);
  }
  // The even lanes of lo then of hi: (lo0, lo2, lo4, lo6, hi0, hi2, hi4, hi6).
  static inline V evens2(V lo, V hi) {
    const V s = _mm256_shuffle_ps(lo, hi, 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
  }
  static inline V odds2(V lo, V hi) {
    const V s = _mm256_shuffle_ps(lo, hi, 0xDD);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
  }
};

struct Zmm {
  using V = __m512;
  static constexpr int L = 16;
  DC_AVX512_ATTR static inline V zero() { return _mm512_setzero_ps(); }
  DC_AVX512_ATTR static inline V set1(float f) { return _mm512_set1_ps(f); }
  DC_AVX512_ATTR static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  DC_AVX512_ATTR static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  DC_AVX512_ATTR static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  DC_AVX512_ATTR static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  DC_AVX512_ATTR static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  DC_AVX512_ATTR static inline V div(V a, V b) { return _mm512_div_ps(a, b); }
  DC_AVX512_ATTR static inline V max(V a, V b) { return _mm512_max_ps(a, b); }
  DC_AVX512_ATTR static inline V min(V a, V b) { return _mm512_min_ps(a, b); }
  DC_AVX512_ATTR static inline __mmask16 mask(int n) {
    return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
  }
  DC_AVX512_ATTR static inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  DC_AVX512_ATTR static inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  DC_AVX512_ATTR static inline V load_lanes(const float* p, int b, int e) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask(e) & ~mask(b)), p);
  }
  DC_AVX512_ATTR static inline V evens2(V lo, V hi) {
    const __m512i ix = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(lo, ix, hi);
  }
  DC_AVX512_ATTR static inline V odds2(V lo, V hi) {
    const __m512i ix = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(lo, ix, hi);
  }
};

}  // namespace

#define DC_NS ymm
#define DC_TGT
#define DC_VT Ymm
#include "kernels/conv_sparse_body.inc"
#undef DC_NS
#undef DC_TGT
#undef DC_VT

#define DC_NS zmm
#define DC_TGT DC_AVX512_ATTR
#define DC_VT Zmm
#include "kernels/conv_sparse_body.inc"
#undef DC_NS
#undef DC_TGT
#undef DC_VT

void depthwise_avx2(const DepthwiseArgs& a, int nthreads, bool use_zmm) {
  const bool ok = use_zmm ? zmm::depthwise(a, nthreads) : ymm::depthwise(a, nthreads);
  if (!ok) depthwise_ref(a, nthreads);  // no scratch memory: the scalar twin needs none
}

void conv1x1_sparse_avx2(const Conv1x1Args& a, int nthreads, bool use_zmm) {
  if (use_zmm) zmm::conv1x1(a, nthreads);
  else ymm::conv1x1(a, nthreads);
}

}  // namespace kernels
}  // namespace deepcomp
