#include "huffman/sparse_index.h"

#include <cstring>

namespace deepcomp {
namespace sparse_index {

const char* status_message(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::BadIndexBits: return "relative index width outside 2..8 bits";
    case Status::PastEnd: return "relative indices reach past the end of the tensor";
    case Status::FillerStep: return "a filler entry does not take the largest step";
    case Status::TrailingFiller: return "the last entry is a filler";
    case Status::NnzMismatch: return "streams hold a different number of non-zeros than the tensor table says";
    case Status::CodeOutOfRange: return "cluster code outside the codebook";
  }
  return "unknown error";
}

namespace {

// One walk, three outputs: `emit(position, code)` is called for each real entry, in
// increasing position order, at most nnz times.
template <typename Emit>
Status walk(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
            uint32_t filler_code, uint64_t numel, size_t nnz, Emit emit) {
  if (index_bits < 2 || index_bits > 8) return Status::BadIndexBits;
  const uint32_t max_step = (1u << index_bits) - 1;
  // filler_code <= 256, so real codes (< filler_code) fit in a byte.
  if (filler_code > 256) return Status::CodeOutOfRange;
  uint64_t next = 0;  // position of the current entry plus one: avoids starting at -1
  size_t n = 0;
  for (size_t j = 0; j < entries; ++j) {
    uint32_t r = rel[j];
    if (r > max_step) return Status::PastEnd;
    next += r + 1;
    if (next > numel) return Status::PastEnd;
    uint32_t c = codes[j];
    if (c == filler_code) {
      if (r != max_step) return Status::FillerStep;
      if (j + 1 == entries) return Status::TrailingFiller;
      continue;
    }
    if (c > filler_code) return Status::CodeOutOfRange;
    if (n == nnz) return Status::NnzMismatch;
    emit(next - 1, c);
    ++n;
  }
  return n == nnz ? Status::Ok : Status::NnzMismatch;
}

}  // namespace

Status check(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
             uint32_t filler_code, uint64_t numel, size_t nnz) {
  return walk(rel, codes, entries, index_bits, filler_code, numel, nnz, [](uint64_t, uint32_t) {});
}

Status expand(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
              uint32_t filler_code, uint64_t numel, size_t nnz, int64_t* positions,
              uint8_t* codes_out) {
  size_t n = 0;
  return walk(rel, codes, entries, index_bits, filler_code, numel, nnz, [&](uint64_t p, uint32_t c) {
    positions[n] = static_cast<int64_t>(p);
    codes_out[n] = static_cast<uint8_t>(c);
    ++n;
  });
}

Status dense(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
             uint32_t filler_code, uint64_t numel, size_t nnz, const uint32_t* book, uint32_t* out,
             bool out_is_zero) {
  // One bulk clear beats clearing each short gap as the walk passes it (gaps are a few
  // words long at typical densities, and a memset call per gap dominated).
  if (!out_is_zero) std::memset(out, 0, numel * sizeof(uint32_t));
  return walk(rel, codes, entries, index_bits, filler_code, numel, nnz,
              [&](uint64_t p, uint32_t c) { out[p] = book[c]; });
}

}  // namespace sparse_index
}  // namespace deepcomp
