// Scalar reference for the codebook GEMM over dense codes (lut_gemm): one dot product per
// output, k in order, in float. Rows of W go to threads in chunks; each output is
// computed whole by one thread, so the thread count never changes a result.
#include <cstdint>

#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

namespace {

struct RefJob {
  const LutArgs* a;
  float table[256];
  int64_t rows_per_chunk;
};

void ref_chunk(void* ctx, int64_t c) {
  const RefJob& j = *static_cast<const RefJob*>(ctx);
  const LutArgs& a = *j.a;
  const int64_t r0 = c * j.rows_per_chunk;
  const int64_t r1 = r0 + j.rows_per_chunk < a.n ? r0 + j.rows_per_chunk : a.n;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* code = a.codes + r * a.k;
    const float bias = a.bias ? a.bias[r] : 0.0f;
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* x = a.x + b * a.k;
      float acc = 0.0f;
      for (int64_t i = 0; i < a.k; ++i) acc += x[i] * j.table[code[i]];
      float out = acc + bias;
      if (a.relu) out = out > 0.0f ? out : 0.0f;
      a.y[b * a.n + r] = out;
    }
  }
}

void ref_decode_chunk(void* ctx, int64_t c) {
  const RefJob& j = *static_cast<const RefJob*>(ctx);
  const LutArgs& a = *j.a;
  const int64_t r0 = c * j.rows_per_chunk;
  const int64_t r1 = r0 + j.rows_per_chunk < a.n ? r0 + j.rows_per_chunk : a.n;
  for (int64_t i = r0 * a.k; i < r1 * a.k; ++i) a.y[i] = j.table[a.codes[i]];
}

}  // namespace

void lut_decode_ref(const LutArgs& a, int nthreads) {
  RefJob j;
  j.a = &a;
  for (int i = 0; i < 256; ++i) j.table[i] = i < a.ncb ? a.codebook[i] : 0.0f;
  j.rows_per_chunk = 64;
  parallel_chunks(nthreads, (a.n + j.rows_per_chunk - 1) / j.rows_per_chunk, ref_decode_chunk, &j);
}

void lut_gemm_ref(const LutArgs& a, int nthreads) {
  RefJob j;
  j.a = &a;
  // A full 256-entry table: a code past the codebook reads 0, never past its end.
  for (int i = 0; i < 256; ++i) j.table[i] = i < a.ncb ? a.codebook[i] : 0.0f;
  j.rows_per_chunk = 16;
  parallel_chunks(nthreads, (a.n + j.rows_per_chunk - 1) / j.rows_per_chunk, ref_chunk, &j);
}

}  // namespace kernels
}  // namespace deepcomp
