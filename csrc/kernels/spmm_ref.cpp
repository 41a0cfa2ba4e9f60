// Scalar reference for the sparse matmul (fp32 values or codebook codes). This is the
// path a CPU without AVX2 runs and what the tests hold the AVX2 twin against: one
// accumulator per output, nonzeros summed in storage order.
#include <cstdint>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

template <typename Index, bool Codebook>
void spmm_ref_impl(const SparseArgs& a, const Index* idx, int nthreads) {
  const int64_t rows = a.n_out;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p0 = a.indptr[r], p1 = a.indptr[r + 1];
    const float b = a.bias ? a.bias[r] : 0.0f;
    for (int64_t i = 0; i < a.batch; ++i) {
      const float* x = a.x + i * a.n_in;
      float acc = 0.0f;
      for (int64_t p = p0; p < p1; ++p) {
        const float v = Codebook ? a.codebook[a.codes[p]] : a.values[p];
        acc += v * x[idx[p]];
      }
      float out = acc + b;
      if (a.relu) out = out > 0.0f ? out : 0.0f;
      a.y[i * a.n_out + r] = out;
    }
  }
}

}  // namespace

void spmm_ref(const SparseArgs& a, int nthreads) {
  if (a.codes) {
    if (a.idx16) spmm_ref_impl<uint16_t, true>(a, a.idx16, nthreads);
    else spmm_ref_impl<int32_t, true>(a, a.idx32, nthreads);
  } else {
    if (a.idx16) spmm_ref_impl<uint16_t, false>(a, a.idx16, nthreads);
    else spmm_ref_impl<int32_t, false>(a, a.idx32, nthreads);
  }
}

}  // namespace kernels
}  // namespace deepcomp
