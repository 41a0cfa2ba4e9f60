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
void gemm_int8_avx2(const Int8Args& a, int nthreads, bool vnni);
bool int8_vnni_supported();

// Depthwise and sparse 1x1 convolution twins (conv_sparse_ref.cpp / conv_sparse_avx2.cpp).
// zmm: the AVX-512 variant (only when avx512_usable(false)).
void depthwise_ref(const DepthwiseArgs& a, int nthreads);
void depthwise_avx2(const DepthwiseArgs& a, int nthreads, bool zmm);
void conv1x1_sparse_ref(const Conv1x1Args& a, int nthreads);
void conv1x1_sparse_avx2(const Conv1x1Args& a, int nthreads, bool zmm);

}  // namespace kernels
}  // namespace deepcomp
