// Scalar references for the depthwise and sparse 1x1 convolutions: what a CPU without
// AVX2 runs and what the tests hold the vector twins against. One accumulator per
// output, terms summed in a fixed order (depthwise: kernel row, then column; 1x1: the
// row's nonzeros in storage order), then the bias, then the activation.
#include <cstdint>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

template <typename Index, bool Codebook>
void conv1x1_ref_impl(const Conv1x1Args& a, const Index* idx, int nthreads) {
  // One chunk per (image, output channel): every output is computed by exactly one
  // thread in the same order, so results do not depend on the thread count.
  for_chunks(nthreads, a.n * a.c_out, [&](int64_t t) {
    const int64_t i = t / a.c_out, r = t % a.c_out;
    const float* x = a.x + i * a.c_in * a.hw;
    float* y = a.y + (i * a.c_out + r) * a.hw;
    const int64_t p0 = a.indptr[r], p1 = a.indptr[r + 1];
    const float b = a.bias ? a.bias[r] : 0.0f;
    for (int64_t j = 0; j < a.hw; ++j) {
      float acc = 0.0f;
      for (int64_t p = p0; p < p1; ++p) {
        const float v = Codebook ? a.codebook[a.codes[p]] : a.values[p];
        acc += v * x[static_cast<int64_t>(idx[p]) * a.hw + j];
      }
      y[j] = act_scalar(acc + b, a.act);
    }
  });
}

}  // namespace

void depthwise_ref(const DepthwiseArgs& a, int nthreads) {
  for_chunks(nthreads, a.n * a.c, [&](int64_t plane) {
    const int64_t ch = plane % a.c;
    const float* x = a.x + plane * a.h * a.w;
    const float* wt = a.weight + ch * a.kh * a.kw;
    float* y = a.y + plane * a.oh * a.ow;
    const float b = a.bias ? a.bias[ch] : 0.0f;
    for (int64_t oy = 0; oy < a.oh; ++oy) {
      for (int64_t ox = 0; ox < a.ow; ++ox) {
        float acc = 0.0f;
        for (int64_t ky = 0; ky < a.kh; ++ky) {
          const int64_t iy = oy * a.sh - a.ph + ky;
          if (iy < 0 || iy >= a.h) continue;
          for (int64_t kx = 0; kx < a.kw; ++kx) {
            const int64_t ix = ox * a.sw - a.pw + kx;
            if (ix < 0 || ix >= a.w) continue;
            acc += wt[ky * a.kw + kx] * x[iy * a.w + ix];
          }
        }
        y[oy * a.ow + ox] = act_scalar(acc + b, a.act);
      }
    }
  });
}

void conv1x1_sparse_ref(const Conv1x1Args& a, int nthreads) {
  if (a.codes) {
    if (a.idx16) conv1x1_ref_impl<uint16_t, true>(a, a.idx16, nthreads);
    else conv1x1_ref_impl<int32_t, true>(a, a.idx32, nthreads);
  } else {
    if (a.idx16) conv1x1_ref_impl<uint16_t, false>(a, a.idx16, nthreads);
    else conv1x1_ref_impl<int32_t, false>(a, a.idx32, nthreads);
  }
}

}  // namespace kernels
}  // namespace deepcomp
