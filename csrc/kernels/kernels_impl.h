// The twins behind dispatch.cpp: *_ref (portable scalar, the reference) and *_avx2
// (compiled with -mavx2 -mfma, only called when the CPU has them). Not a public header.
#pragma once

#include "kernels/kernels.h"

namespace deepcomp {
namespace kernels {

void spmm_ref(const SparseArgs& a, int nthreads);
// The AVX2 SpMM walks the columns block by block (reading SparseArgs::seg) once its
// transposed X block, n_in * min(32, batch rounded up to 8) floats, exceeds this.
constexpr int64_t kSpmmBlockAboveBytes = 2 << 20;
// xblk: scratch of spmm_avx2_scratch(a) floats (X transposed in batch blocks).
int64_t spmm_avx2_scratch(const SparseArgs& a);
void spmm_avx2(const SparseArgs& a, float* xblk, int nthreads);

// min(0, min x) and max(0, max x) of a row (NaN ignored); the twins give identical results
// (min / max are exact and pick the same operand on ties and NaN).
void int8_row_range_ref(const float* x, int64_t k, float* lo, float* hi);
void int8_row_range_avx2(const float* x, int64_t k, float* lo, float* hi);
// One row of k activations into q, k4 * 4 bytes (k4 = ceil(k / 4)), zero padded.
void int8_quantize_row_ref(const float* x, int64_t k, float inv_scale, int32_t zp, uint8_t* q);
void int8_quantize_row_avx2(const float* x, int64_t k, float inv_scale, int32_t zp, uint8_t* q);
void gemm_int8_ref(const Int8Args& a, int nthreads);
// vnni: use AVX-VNNI's vpdpbusd (only when int8_vnni_supported()).
// zmm: the AVX512-VNNI kernel for batch >= 4 (only when int8_vnni512_enabled()).
void gemm_int8_avx2(const Int8Args& a, int nthreads, bool vnni, bool zmm);
bool int8_vnni_supported();

// Codebook GEMM twins (lut_gemm.cpp dispatches): the AVX2 one runs its zmm variant when
// avx512_usable(false).
void lut_gemm_ref(const LutArgs& a, int nthreads);
void lut_gemm_avx2(const LutArgs& a, int nthreads);
bool lut_vbmi_allowed();  // set_lut_vbmi's setting
void lut_decode_ref(const LutArgs& a, int nthreads);
void lut_decode_avx2(const LutArgs& a, int nthreads);

// int8 direct convolution (conv_int8_*.cpp). x_scale / x_zp: per image (dispatch.cpp
// computes them, identically for every path).
void conv_int8_ref(const ConvInt8Args& a, const float* x_scale, const float* x_inv, const int32_t* x_zp,
                   int nthreads);
// zmm: use the AVX512-VNNI kernel (only when avx512_usable(true)); else AVX2 maddubs.
void conv_int8_avx2(const ConvInt8Args& a, const float* x_scale, const float* x_inv, const int32_t* x_zp,
                    int nthreads, bool zmm);

// Depthwise and sparse 1x1 convolution twins (conv_sparse_ref.cpp / conv_sparse_avx2.cpp).
// zmm: the AVX-512 variant (only when avx512_usable(false)).
void depthwise_ref(const DepthwiseArgs& a, int nthreads);
void depthwise_avx2(const DepthwiseArgs& a, int nthreads, bool zmm);
void conv1x1_sparse_ref(const Conv1x1Args& a, int nthreads);
void conv1x1_sparse_avx2(const Conv1x1Args& a, int nthreads, bool zmm);

// Max-pool twins (max_pool_ref.cpp / max_pool_avx2.cpp): one plane, as the fused
// convolution epilogues call it, and whole tensors. They agree bit for bit (max is exact
// and both keep a NaN).
void max_pool_plane_ref(const PoolGeom& g, const float* x, float* y);
// readable: floats that may be read from x on (at least the plane; more lets the vector
// loads run unmasked past a row's end).
void max_pool_plane_avx2(const PoolGeom& g, const float* x, float* y, int64_t readable);
void max_pool2d_ref(const MaxPoolArgs& a, int nthreads);
void max_pool2d_avx2(const MaxPoolArgs& a, int nthreads);

// Per-thread scratch of at least n floats for one output plane (the fused conv + pool
// epilogues), with kPoolScratchSlack readable floats after them: grows, never shrinks,
// lives as long as the thread.
constexpr int64_t kPoolScratchSlack = 16;
float* pool_scratch(int64_t n);

// Runs f(chunk) for chunk in [0, n) on the shared worker pool (one thread: inline). The
// kernels hand it their per-chunk lambdas.
template <typename F>
void for_chunks(int nthreads, int64_t n, F&& f) {
  parallel_chunks(nthreads, n, [](void* ctx, int64_t c) { (*static_cast<F*>(ctx))(c); }, &f);
}

// The scalar convolution epilogues (ConvAct), shared by the scalar twins.
inline float act_scalar(float v, int32_t act) {
  switch (act) {
    case kActRelu: return v > 0.0f ? v : 0.0f;
    case kActRelu6: return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    case kActHardswish: {
      float t = v + 3.0f;
      t = t > 0.0f ? (t < 6.0f ? t : 6.0f) : 0.0f;
      return v * t / 6.0f;
    }
    default: return v;
  }
}

}  // namespace kernels
}  // namespace deepcomp
