// Run-time choice between the AVX2 kernels and their scalar twins (common/cpu.h), the
// thread count for each call, and the scratch buffers the AVX2 paths need.
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <new>
#include <memory>
#include <vector>

#include "common/cpu.h"
#include "kernels/kernels_impl.h"

namespace deepcomp {
namespace kernels {

void spmm(const SparseArgs& a) {
  if (a.batch == 0 || a.n_out == 0) return;
  const double nnz = static_cast<double>(a.indptr[a.n_out]);
  // Batch columns are processed 8-16 at a time in vector lanes, so a nonzero costs far
  // less than `batch` times its batch-1 cost.
  const int nt = threads_for(nnz * (1.0 + static_cast<double>(a.batch) / 8.0) + static_cast<double>(a.n_out));
  if (active_isa() == Isa::Avx2) {
    // Cache-line aligned, so that a row of the transposed X never straddles two lines;
    // uninitialised on purpose: the kernel writes every element before reading it.
    const size_t bytes = (static_cast<size_t>(spmm_avx2_scratch(a)) * sizeof(float) + 64) / 64 * 64;
    std::unique_ptr<float, void (*)(void*)> scratch(static_cast<float*>(std::aligned_alloc(64, bytes)), std::free);
    if (!scratch) throw std::bad_alloc();
    spmm_avx2(a, scratch.get(), nt);
  } else {
    spmm_ref(a, nt);
  }
}

bool spmm_reads_blocks(int64_t batch, int64_t n_in) {
  if (batch <= 1 || active_isa() != Isa::Avx2) return false;
  const int64_t bw = batch >= 32 ? 32 : (batch + 7) / 8 * 8;
  return n_in * bw * static_cast<int64_t>(sizeof(float)) > kSpmmBlockAboveBytes;
}

std::string check_csr(const int32_t* indptr, int64_t rows, const uint16_t* idx16, const int32_t* idx32,
                      int64_t nnz, int64_t n_in, const uint8_t* codes, int32_t k) {
  if (rows < 0) return "indptr must have rows + 1 entries";
  if (indptr[0] != 0) return "indptr must start at 0";
  if (indptr[rows] != nnz) return "indptr must end at the number of nonzeros (" + std::to_string(nnz) + ")";
  for (int64_t r = 0; r < rows; ++r) {
    if (indptr[r + 1] < indptr[r]) return "indptr decreases at row " + std::to_string(r);
  }
  if (idx16 && n_in < 65536) {
    for (int64_t p = 0; p < nnz; ++p)
      if (idx16[p] >= n_in) return "column index " + std::to_string(idx16[p]) + " out of range [0, " + std::to_string(n_in) + ")";
  } else if (idx32) {
    for (int64_t p = 0; p < nnz; ++p)
      if (idx32[p] < 0 || idx32[p] >= n_in) return "column index " + std::to_string(idx32[p]) + " out of range [0, " + std::to_string(n_in) + ")";
  }
  if (codes && k < 256) {
    for (int64_t p = 0; p < nnz; ++p)
      if (codes[p] >= k) return "code " + std::to_string(codes[p]) + " out of range for a codebook of " + std::to_string(k);
  }
  return std::string();
}

void csr_block_starts(const int32_t* indptr, int64_t rows, const uint16_t* idx16, const int32_t* idx32,
                      int64_t n_in, int64_t seg_cols, int32_t* seg) {
  const int64_t nb = seg_blocks(n_in, seg_cols);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t p = indptr[r];
    const int64_t e = indptr[r + 1];
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * seg_cols;
      while (p < e && (idx16 ? static_cast<int64_t>(idx16[p]) : static_cast<int64_t>(idx32[p])) < c0) ++p;
      seg[b * (rows + 1) + r] = static_cast<int32_t>(p);
    }
    seg[nb * (rows + 1) + r] = static_cast<int32_t>(e);
  }
  for (int64_t b = 0; b <= nb; ++b) seg[b * (rows + 1) + rows] = indptr[rows];
}

bool check_block_starts(const int32_t* indptr, int64_t rows, int64_t nblocks, const int32_t* seg) {
  // Block by block over contiguous rows of the table (the compiler vectorises the
  // comparisons): row by row, each step would touch another cache line, and this runs
  // on every batched call.
  const int32_t* first = seg;
  const int32_t* last = seg + nblocks * (rows + 1);
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) bad |= (first[r] != indptr[r]) | (last[r] != indptr[r + 1]);
  for (int64_t b = 1; b <= nblocks; ++b) {
    const int32_t* prev = seg + (b - 1) * (rows + 1);
    const int32_t* cur = prev + (rows + 1);
    for (int64_t r = 0; r < rows; ++r) bad |= static_cast<int>(cur[r] < prev[r]);
  }
  return bad == 0;
}

int64_t int8_packed_size(int64_t n, int64_t k) { return (n + 15) / 16 * 16 * ((k + 3) / 4 * 4); }

void int8_pack(const int8_t* q, int64_t n, int64_t k, int8_t* packed) {
  const int64_t k4 = (k + 3) / 4;
  const int64_t nblocks = (n + 15) / 16 * 2;
  for (int64_t nb = 0; nb < nblocks; ++nb) {
    for (int64_t g = 0; g < k4; ++g) {
      int8_t* dst = packed + (nb * k4 + g) * 32;
      for (int64_t c = 0; c < 8; ++c) {
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t o = nb * 8 + c, i = g * 4 + j;
          dst[c * 4 + j] = (o < n && i < k) ? q[o * k + i] : 0;
        }
      }
    }
  }
}

void int8_row_range_ref(const float* x, int64_t k, float* lo_out, float* hi_out) {
  // The range always includes 0 so that zero (padding, ReLU output) is exact.
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  *lo_out = lo;
  *hi_out = hi;
}

namespace {
void int8_params_from_range(float lo, float hi, float* scale, float* inv_scale, int32_t* zp) {
  float s = (hi - lo) / 127.0f;
  if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
  *scale = s;
  *inv_scale = 1.0f / s;
  int32_t z = static_cast<int32_t>(std::nearbyint(-lo / s));
  *zp = z < 0 ? 0 : (z > 127 ? 127 : z);
}
}  // namespace

void int8_row_params(const float* x, int64_t k, float* scale, float* inv_scale, int32_t* zp) {
  float lo, hi;
  int8_row_range_ref(x, k, &lo, &hi);
  int8_params_from_range(lo, hi, scale, inv_scale, zp);
}

namespace {
std::atomic<int> g_vnni{-1};  // the VNNI switch (set_int8_vnni / DEEPCOMP_NO_VNNI); -1: not read yet

bool vnni_allowed() {
  int v = g_vnni.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("DEEPCOMP_NO_VNNI");
    const bool off = env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
    v = off ? 0 : 1;
    g_vnni.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}
}  // namespace

bool int8_vnni_available() { return cpu_has_avx2() && int8_vnni_supported(); }

void set_int8_vnni(bool enabled) { g_vnni.store(enabled ? 1 : 0); }

// The switch governs both VNNI forms, which CPUs have independently (Zen 4 and Ice Lake
// servers: AVX512-VNNI only; Alder Lake: AVX-VNNI only; Sapphire Rapids: both).
bool int8_vnni_enabled() { return vnni_allowed() && int8_vnni_available(); }

bool int8_vnni512_enabled() { return vnni_allowed() && avx512_usable(/*need_vnni=*/true); }

void gemm_int8(Int8Args& a) {
  if (a.batch == 0 || a.n == 0) return;
  const int64_t kp = (a.k + 3) / 4 * 4;
  std::unique_ptr<uint8_t[]> xq(new uint8_t[static_cast<size_t>(a.batch * kp)]);
  std::vector<float> scale(static_cast<size_t>(a.batch)), inv(static_cast<size_t>(a.batch));
  std::vector<int32_t> zp(static_cast<size_t>(a.batch));
  // The range is the same min / max on either path (exact), so are the parameters. Each
  // row is quantized right after its range is found, while it is still in L1: a batch of
  // activations is often larger than L2, and a second pass would read it from memory again.
  const bool avx2 = active_isa() == Isa::Avx2;
  const int ntq = threads_for(static_cast<double>(a.batch * a.k));
  uint8_t* q = xq.get();
#pragma omp parallel for num_threads(ntq) if (ntq > 1) schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    const float* xr = a.x + b * a.k;
    float lo, hi;
    if (avx2) int8_row_range_avx2(xr, a.k, &lo, &hi);
    else int8_row_range_ref(xr, a.k, &lo, &hi);
    int8_params_from_range(lo, hi, &scale[b], &inv[b], &zp[b]);
    if (avx2) int8_quantize_row_avx2(xr, a.k, inv[b], zp[b], q + b * kp);
    else int8_quantize_row_ref(xr, a.k, inv[b], zp[b], q + b * kp);
  }
  a.xq = xq.get();
  a.x_scale = scale.data();
  a.x_zp = zp.data();
  const double work = static_cast<double>(a.batch) * static_cast<double>(a.n) * static_cast<double>(a.k);
  const int nt = threads_for(work / 32.0);
  if (avx2) {
    std::unique_ptr<int32_t[]> part(new int32_t[static_cast<size_t>(nt * a.batch * 16)]);
    a.part = part.get();
    gemm_int8_avx2(a, nt, int8_vnni_enabled(), int8_vnni512_enabled());
    a.part = nullptr;
  } else {
    gemm_int8_ref(a, nt);
  }
  a.xq = nullptr;
  a.x_scale = nullptr;
  a.x_zp = nullptr;
}

// ---- int8 direct convolution ----------------------------------------------------------

int64_t conv_int8_packed_size(int64_t o, int64_t c, int64_t kh, int64_t kw) {
  return (o + 7) / 8 * kh * kw * ((c + 3) / 4) * 32;
}

void conv_int8_pack(const int8_t* q, int64_t o, int64_t c, int64_t kh, int64_t kw, int8_t* packed) {
  const int64_t c4 = (c + 3) / 4, taps = kh * kw, ob = (o + 7) / 8;
  std::memset(packed, 0, static_cast<size_t>(conv_int8_packed_size(o, c, kh, kw)));
  for (int64_t b = 0; b < ob; ++b)
    for (int64_t g = 0; g < c4; ++g)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t j = 0; j < 8; ++j)
          for (int64_t i = 0; i < 4; ++i) {
            const int64_t oc = b * 8 + j, ic = g * 4 + i;
            if (oc < o && ic < c) packed[(((b * c4 + g) * taps + t) * 8 + j) * 4 + i] = q[(oc * c + ic) * taps + t];
          }
}

void conv_int8(const ConvInt8Args& a) {
  if (a.n == 0 || a.o == 0 || a.oh <= 0 || a.ow <= 0) return;
  const int64_t chw = a.c * a.h * a.w;
  std::vector<float> scale(static_cast<size_t>(a.n)), inv(static_cast<size_t>(a.n));
  std::vector<int32_t> zp(static_cast<size_t>(a.n));
  // One scale and zero point per image: the range scan is exact (min / max), so every
  // path gets the same parameters.
  const bool avx2 = active_isa() == Isa::Avx2;
  for (int64_t b = 0; b < a.n; ++b) {
    float lo, hi;
    if (avx2) int8_row_range_avx2(a.x + b * chw, chw, &lo, &hi);
    else int8_row_range_ref(a.x + b * chw, chw, &lo, &hi);
    int8_params_from_range(lo, hi, &scale[b], &inv[b], &zp[b]);
  }
  const double work = static_cast<double>(a.n) * static_cast<double>(a.o) * static_cast<double>(a.oh * a.ow) *
                      static_cast<double>(a.c * a.kh * a.kw);
  const int nt = threads_for(work / 32.0);
  // zmm vpdpbusd unless the zmm variants (DEEPCOMP_NO_AVX512) or VNNI (DEEPCOMP_NO_VNNI,
  // set_int8_vnni) are off: then AVX2 maddubs.
  const bool zmm = int8_vnni512_enabled();
  if (avx2) conv_int8_avx2(a, scale.data(), inv.data(), zp.data(), nt, zmm);
  else conv_int8_ref(a, scale.data(), inv.data(), zp.data(), nt);
}

}  // namespace kernels
}  // namespace deepcomp
