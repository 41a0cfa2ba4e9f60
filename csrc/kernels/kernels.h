// deepcomp's compute kernels: plain functions over pointers and sizes (no Python, no
// torch). dispatch.cpp picks the AVX2 or the scalar twin at run time; the twins are
// declared in kernels_impl.h and are not part of this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace deepcomp {
namespace kernels {

// ---- threads ---------------------------------------------------------------------
// The kernels use their own thread count rather than OpenMP's global setting, so that
// torch (which may share the OpenMP runtime) and deepcomp do not change each other's.
void set_num_threads(int n);  // n >= 1
int get_num_threads();
// Threads to use for `work` (in the units threads.cpp describes): 1 below a threshold,
// where starting a parallel region costs more than it saves.
int threads_for(double work);

// fn(ctx, c) for every c in [0, n), on the calling thread and up to nthreads - 1 of the
// kernels' own worker threads, taking chunks in order (threads.cpp says why not OpenMP).
// Returns when every chunk is done. fn must not throw.
void parallel_chunks(int nthreads, int64_t n, void (*fn)(void*, int64_t), void* ctx);

// The work below which a call stays on one thread (tests set 0 to force the team).
void set_parallel_min_work(double work);
double parallel_min_work();

// ---- sparse matmul: Y[B, n_out] = X[B, n_in] @ W.T (+ bias) (+ ReLU) ----------------
// W is CSR (n_out rows, n_in columns). Its values are either fp32 (`values`) or uint8
// indices (`codes`) into an fp32 `codebook` of `k` entries; exactly one of the two is
// set. Column indices are uint16 (`idx16`, needs n_in <= 65536) or int32 (`idx32`).
// The caller guarantees: indptr is non-decreasing from 0 to nnz, every index is in
// [0, n_in), every code is in [0, k). (deepcomp/ops.py checks this.)
struct SparseArgs {
  const float* x = nullptr;
  int64_t batch = 0;
  int64_t n_in = 0;
  int64_t n_out = 0;
  const int32_t* indptr = nullptr;
  const uint16_t* idx16 = nullptr;
  const int32_t* idx32 = nullptr;
  const float* values = nullptr;
  const uint8_t* codes = nullptr;
  const float* codebook = nullptr;
  int32_t k = 0;
  const float* bias = nullptr;  // may be null
  bool relu = false;
  float* y = nullptr;
  // Optional column blocking (from csr_block_starts; needs indices sorted within rows):
  // seg[b * (n_out + 1) + r] is the first nonzero of row r whose column is >= b * seg_cols,
  // for b in [0, ceil(n_in / seg_cols)], the last entry of a row being indptr[r + 1].
  // With it, batch > 1 runs over one block of columns at a time, so that the slice of X
  // the nonzeros touch stays in L1.
  const int32_t* seg = nullptr;
  int64_t seg_cols = 0;
};
void spmm(const SparseArgs& a);

// Column width of a block: kSegCols * 32 batch columns * 4 bytes fill half of a 64 KiB L1.
constexpr int64_t kSegCols = 256;
inline int64_t seg_blocks(int64_t n_in, int64_t seg_cols) { return (n_in + seg_cols - 1) / seg_cols; }
// Fills seg ((seg_blocks + 1) * rows entries) for sorted CSR indices.
void csr_block_starts(const int32_t* indptr, int64_t rows, const uint16_t* idx16, const int32_t* idx32,
                      int64_t n_in, int64_t seg_cols, int32_t* seg);
// True when spmm(a) will read a.seg for this batch and width on the active path (the
// binding checks the table only then: the check costs a few % of a small product).
bool spmm_reads_blocks(int64_t batch, int64_t n_in);
// True when seg is consistent with indptr (monotonic within each row, within its bounds).
bool check_block_starts(const int32_t* indptr, int64_t rows, int64_t nblocks, const int32_t* seg);

// Empty when the CSR arrays satisfy spmm's preconditions (indptr from 0 to nnz and
// non-decreasing, indices in [0, n_in), codes in [0, k) when given), else the first
// problem found. One pass over the arrays: run once per weight, not per call.
std::string check_csr(const int32_t* indptr, int64_t rows, const uint16_t* idx16, const int32_t* idx32,
                      int64_t nnz, int64_t n_in, const uint8_t* codes, int32_t k);

// ---- int8 GEMM: Y[B, N] = dequant(quant(X[B, K]) @ Wq.T) (+ bias) (+ ReLU) ---------
// Weights: int8 symmetric per output channel, q in [-127, 127], w ~= q * w_scale[n].
// Activations: quantized per batch row on the fly to 7-bit unsigned affine,
// xq = clamp(round(x / s) + zp, 0, 127), the range [min(x, 0), max(x, 0)] mapped onto
// [0, 127]. Seven bits (as FBGEMM's reduce_range) make the 16-bit pair sums of
// _mm256_maddubs_epi16 unable to saturate: 2 * 127 * 127 = 32258 < 32767.
// Accumulation is exact in int32 while K * 127 * 127 < 2^31, i.e. K <= 133143.
constexpr int64_t kInt8MaxK = 133143;

// Packed weight layout for the AVX2 kernel: output channels in blocks of 8 (zero
// padded to a multiple of 16 channels: the kernel takes blocks in pairs), K in groups of
// 4 (zero padded); block-major, then k-group, then channel,
// then the 4 k values: 32 bytes per (block, k-group).
int64_t int8_packed_size(int64_t n, int64_t k);
void int8_pack(const int8_t* q, int64_t n, int64_t k, int8_t* packed);

struct Int8Args {
  const float* x = nullptr;  // [batch, k]
  int64_t batch = 0;
  int64_t k = 0;
  int64_t n = 0;
  const int8_t* packed = nullptr;   // int8_pack layout (both paths)
  const int32_t* row_sums = nullptr;  // [n]: sum over k of q
  const float* w_scale = nullptr;     // [n]
  const float* bias = nullptr;        // may be null
  bool relu = false;
  float* y = nullptr;  // [batch, n]
  // Scratch the dispatcher fills: [batch, k4*4] quantized activations, zero padded,
  // and per-row scale / zero point.
  uint8_t* xq = nullptr;
  float* x_scale = nullptr;
  int32_t* x_zp = nullptr;
  int32_t* part = nullptr;  // AVX2 path: [threads][batch][16] int32 partial sums (unless K is
                            // cut into passes: the kernel then keeps its own per task)
};
void gemm_int8(Int8Args& a);

// VNNI (vpdpbusd) for the int8 kernels: used where the CPU has it unless switched off
// (DEEPCOMP_NO_VNNI=1, or set_int8_vnni(false) for tests); then AVX2 maddubs. Results are
// identical. Two forms: AVX-VNNI on ymm (int8_vnni_enabled) and AVX512-VNNI on zmm
// (int8_vnni512_enabled; also off with DEEPCOMP_NO_AVX512=1), for GEMM batches >= 4 and
// the direct convolution.
bool int8_vnni_available();
void set_int8_vnni(bool enabled);
bool int8_vnni_enabled();
bool int8_vnni512_enabled();

// Per-row activation quantization parameters (shared by both paths so that they agree
// bit for bit).
void int8_row_params(const float* x, int64_t k, float* scale, float* inv_scale, int32_t* zp);

// ---- int8 direct convolution (groups = 1, dilation 1), no im2col -------------------
// y[n, o] = dequant(sum over (c, ky, kx) of quant(x)[n, c, oy*sh+ky-ph, ox*sw+kx-pw] * q)
// (+ bias) (+ ReLU), written NCHW fp32. Weights as the int8 GEMM: symmetric per output
// channel, q in [-127, 127], row_sums[o] the sum of q over (c, ky, kx). Activations:
// 7-bit unsigned affine per image (the int8 GEMM's formula over all C*H*W values of the
// image); padding is the image's zero point, so a padded tap contributes exactly 0
// after the row-sum correction. Accumulation is exact in int32 while
// c * kh * kw <= kInt8MaxK, so every path gives the same int32 sums and, with one fused
// multiply-add per output, the same fp32 bits.
struct ConvInt8Args {
  const float* x = nullptr;  // [n, c, h, w]
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t o = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t oh = 0, ow = 0;  // the caller's output size, (h + 2 ph - kh) / sh + 1 etc.
  const int8_t* packed = nullptr;    // conv_int8_pack layout
  const int32_t* row_sums = nullptr;  // [o]
  const float* w_scale = nullptr;     // [o]
  const float* bias = nullptr;        // may be null
  bool relu = false;
  float* y = nullptr;  // [n, o, oh, ow]
};
// Packed weights: output channels in blocks of 8 (zero padded), then input channels in
// groups of 4 (zero padded), then the kh * kw taps, then the 8 channels' 4 bytes: for a
// group of 4 input channels and a tap, the 8 channels' weights are 32 contiguous bytes,
// and the kernels walk them in storage order.
int64_t conv_int8_packed_size(int64_t o, int64_t c, int64_t kh, int64_t kw);
// q: [o, c, kh, kw] int8 (PyTorch's weight order).
void conv_int8_pack(const int8_t* q, int64_t o, int64_t c, int64_t kh, int64_t kw, int8_t* packed);
// Paths: vpdpbusd on zmm where the CPU has AVX512-VNNI, AVX2 maddubs + madd where it has
// AVX2 only or DEEPCOMP_NO_AVX512=1 / DEEPCOMP_NO_VNNI=1 is set, else the scalar twin.
void conv_int8(const ConvInt8Args& a);

// ---- im2col for Conv2d (groups = 1) -----------------------------------------------
// x: [n, c, h, w]; writes cols: [n * oh * ow, c * kh * kw] row-major (one patch per
// row, in the order of a flattened [c, kh, kw] weight), zero outside the padding.
void im2col(const float* x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t oh, int64_t ow, float* cols);

// ---- codebook GEMM over dense codes: Y[B, N] = X[B, K] @ W.T (+ bias) (+ ReLU) ------
// W[n, k] = codebook[codes[n * K + k]]: uint8 codes, row-major [N, K] (the .dcz dense
// shared form, read as is), and an fp32 codebook of `ncb` entries (1..256). No fp32 copy
// of W is kept: each call decodes tiles of codes into L1/L2 and reuses every decoded
// tile for all rows of X. A code >= ncb reads some entry of the codebook or 0, never
// memory outside it (deepcomp/ops.py rejects such codes beforehand).
// Every output is one dot product accumulated in the same order whatever the batch or
// the thread count (vector lanes over k, then one horizontal sum), so results do not
// depend on either; the scalar twin sums k in order and differs from the SIMD paths
// only by rounding (each within K ulp-sized steps of the exact sum, see tests).
struct LutArgs {
  const float* x = nullptr;  // [batch, k]
  int64_t batch = 0;
  int64_t k = 0;
  int64_t n = 0;
  const uint8_t* codes = nullptr;     // [n, k]
  const float* codebook = nullptr;    // [ncb]
  int32_t ncb = 0;
  const float* bias = nullptr;        // [n] or null
  bool relu = false;
  float* y = nullptr;                 // [batch, n]
};
void lut_gemm(const LutArgs& a);
// The zmm path decodes codebooks of over 64 entries with AVX512-VBMI where the CPU has it;
// false keeps it on the vpermt2ps chain (for tests, to compare both decoders).
void set_lut_vbmi(bool allow);
// W itself: a.y[n * k + i] = codebook[codes[n * k + i]] (a.x, a.batch, a.bias and a.relu
// unused), with the same decoders, for layers that decode to fp32 and hand W to a GEMM
// (large batches, where decoding once per call is cheap next to the product).
void lut_decode(const LutArgs& a);

// ---- depthwise and sparse 1x1 convolution (NCHW, fp32; conv_sparse*.cpp) ------------
// Epilogue after the bias: none, max(v, 0), min(max(v, 0), 6), v * min(max(v + 3, 0), 6) / 6.
enum ConvAct : int32_t { kActNone = 0, kActRelu = 1, kActRelu6 = 2, kActHardswish = 3 };

// Depthwise: groups == channels, one filter per channel (channel multiplier 1), dilation 1.
// y[n, c] = conv(x[n, c], weight[c]) + bias[c], zero padding; any kernel size and stride
// (the vector path specialises 3x3 and 5x5 and column strides 1 and 2).
struct DepthwiseArgs {
  const float* x = nullptr;  // [n, c, h, w]
  int64_t n = 0, c = 0, h = 0, w = 0;
  const float* weight = nullptr;  // [c, kh, kw]
  int64_t kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t oh = 0, ow = 0;          // (h + 2 ph - kh) / sh + 1, likewise for w
  const float* bias = nullptr;     // [c] or null
  int32_t act = kActNone;
  float* y = nullptr;              // [n, c, oh, ow]
};
void depthwise_conv2d(const DepthwiseArgs& a);

// Sparse 1x1 convolution as SpMM over channels (Elsen et al., "Fast Sparse ConvNets"):
// per image, Y[c_out, hw] = W[c_out, c_in] @ X[c_in, hw] (+ bias) (+ act), W in CSR with
// fp32 values or uint8 codes into a codebook, exactly as SparseArgs (same preconditions:
// indptr from 0 to nnz, indices in [0, c_in), codes in [0, k)). NCHW already lays each
// input channel out as a contiguous row of hw pixels, so nothing is transposed.
struct Conv1x1Args {
  const float* x = nullptr;  // [n, c_in, hw]
  int64_t n = 0, c_in = 0, hw = 0, c_out = 0;
  const int32_t* indptr = nullptr;
  const uint16_t* idx16 = nullptr;
  const int32_t* idx32 = nullptr;
  const float* values = nullptr;
  const uint8_t* codes = nullptr;
  const float* codebook = nullptr;
  int32_t k = 0;
  const float* bias = nullptr;  // [c_out] or null
  int32_t act = kActNone;
  float* y = nullptr;  // [n, c_out, hw]
};
void conv1x1_sparse(const Conv1x1Args& a);

}  // namespace kernels
}  // namespace deepcomp

namespace deepcomp {
namespace kernels {

// ---- sparse KxK convolution, direct on NCHW (conv_sparse_kxk*.cpp) ------------------
// y[i, o] = sum over the nonzeros of W's row o (column col = (c * kh + ky) * kw + kx, in
// storage order) of w * x[i, c, oy * sh + ky - ph, ox * sw + kx - pw] (zero outside the
// image), + bias[o], then act. W is the [c_out, c * kh * kw] CSR matrix view of the conv
// weight (fp32 values or uint8 codes into a codebook), with SparseArgs' preconditions
// (indptr from 0 to nnz, indices in [0, c * kh * kw), codes in [0, k)). No im2col, and
// no transpose of the result: for small images at high sparsity (LeNet-5) the patch
// matrix and the NHWC-to-NCHW copy cost more than the multiply-adds.
struct PoolGeom;  // below, with the max-pool kernel
struct ConvSparseArgs {
  const float* x = nullptr;  // [n, c, h, w]
  int64_t n = 0, c = 0, h = 0, w = 0, c_out = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t oh = 0, ow = 0;  // (h + 2 ph - kh) / sh + 1, likewise for w
  const int32_t* indptr = nullptr;
  const uint16_t* idx16 = nullptr;
  const int32_t* idx32 = nullptr;
  const float* values = nullptr;
  const uint8_t* codes = nullptr;
  const float* codebook = nullptr;
  int32_t k = 0;
  const float* bias = nullptr;  // [c_out] or null
  int32_t act = kActNone;       // ConvAct
  float* y = nullptr;           // [n, c_out, oh, ow]; with `pool`, [n, c_out, pool.oh, pool.ow]
  // Optional max-pool after the activation (pool.kh > 0; pool.h / pool.w must be oh / ow):
  // each output plane is pooled while it is in L1 and only the pooled plane is written, so
  // LeNet's conv + ReLU + 2x2 pool is one pass and one call.
  const PoolGeom* pool = nullptr;
};
void conv_sparse_kxk(const ConvSparseArgs& a);
void conv_sparse_kxk_ref(const ConvSparseArgs& a, int nthreads);
void conv_sparse_kxk_avx2(const ConvSparseArgs& a, int nthreads);

}  // namespace kernels
}  // namespace deepcomp

namespace deepcomp {
namespace kernels {

// ---- max-pool 2-D over NCHW planes (max_pool*.cpp) --------------------------------------
// y[oy, ox] = max of x over the window rows oy * sh - ph + [0, kh) and columns
// ox * sw - pw + [0, kw), clipped to the plane (padding never wins, as PyTorch's -inf
// padding); dilation 1. A NaN in the window gives NaN, as in PyTorch. Any output size the
// caller computed (ceil_mode included) as long as every window overlaps the plane.
struct PoolGeom {
  int64_t h = 0, w = 0, kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0, oh = 0, ow = 0;
};
struct MaxPoolArgs {
  const float* x = nullptr;  // [planes, h, w]
  int64_t planes = 0;
  PoolGeom g;
  float* y = nullptr;        // [planes, oh, ow]
};
void max_pool2d(const MaxPoolArgs& a);

}  // namespace kernels
}  // namespace deepcomp
