#include "huffman/sparse_index.h"

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

Status expand(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
              uint32_t filler_code, uint64_t numel, size_t nnz, int64_t* positions,
              uint8_t* codes_out) {
  if (index_bits < 2 || index_bits > 8) return Status::BadIndexBits;
  const uint32_t max_step = (1u << index_bits) - 1;
  // filler_code <= 256, so real codes (< filler_code) fit in a byte.
  if (filler_code > 256) return Status::CodeOutOfRange;
  uint64_t next = 0;  // position of the entry being read, plus one: avoids -1
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
    positions[n] = static_cast<int64_t>(next - 1);
    codes_out[n] = static_cast<uint8_t>(c);
    ++n;
  }
  return n == nnz ? Status::Ok : Status::NnzMismatch;
}

}  // namespace sparse_index
}  // namespace deepcomp
