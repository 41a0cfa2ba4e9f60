// Relative-index walk of the shared_sparse encoding (docs/FORMAT.md, 3.3).
#pragma once

#include <cstddef>
#include <cstdint>

#include "huffman/huffman.h"

namespace deepcomp {
namespace sparse_index {

enum class Status : int {
  Ok = 0,
  BadIndexBits,     // index_bits outside 2..8
  PastEnd,          // a position reaches numel or beyond
  FillerStep,       // a filler whose relative index is not 2^b - 1
  TrailingFiller,   // the last entry is a filler
  NnzMismatch,      // the real entries do not number `nnz`
  CodeOutOfRange,   // a cluster code above the filler code
  Stream,           // a Huffman stream is malformed (its own status says how)
};

const char* status_message(Status s);

// All three walk `entries` (relative index, cluster code) pairs from position -1: each
// moves the position by rel + 1, and code == filler_code marks a filler. They check the
// same rules and differ only in what they write.

// Checks only; writes nothing.
Status check(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
             uint32_t filler_code, uint64_t numel, size_t nnz);

// Writes the flat positions and codes of the `nnz` real entries (never more than nnz).
Status expand(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
              uint32_t filler_code, uint64_t numel, size_t nnz, int64_t* positions,
              uint8_t* codes_out);

// Writes the dense row-major tensor, out[numel]: book[code] (as a bit pattern, book has
// filler_code entries) at each real entry and zero everywhere else. `out_is_zero` says
// the caller's buffer is already zeroed (fresh calloc pages), which skips a full pass.
Status dense(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
             uint32_t filler_code, uint64_t numel, size_t nnz, const uint32_t* book, uint32_t* out,
             bool out_is_zero);

// The walk over entries fed block by block (the fused decoder's), with the same checks
// as above: `emit(position, code)` for each real entry, in increasing position order.
class Walker {
 public:
  Walker(size_t entries, int index_bits, uint32_t filler_code, uint64_t numel, size_t nnz)
      : entries_(entries), filler_(filler_code), numel_(numel), nnz_(nnz),
        max_step_(index_bits >= 2 && index_bits <= 8 ? (1u << index_bits) - 1 : 0) {}

  Status start() const {
    if (max_step_ == 0) return Status::BadIndexBits;
    // filler_code <= 256, so real codes (< filler_code) fit in a byte.
    return filler_ > 256 ? Status::CodeOutOfRange : Status::Ok;
  }

  template <typename Emit>
  inline Status feed(const uint16_t* rel, const uint16_t* codes, size_t count, Emit emit) {
    for (size_t i = 0; i < count; ++i, ++j_) {
      uint32_t r = rel[i];
      if (r > max_step_) return Status::PastEnd;
      next_ += r + 1;
      if (next_ > numel_) return Status::PastEnd;
      uint32_t c = codes[i];
      if (c == filler_) {
        if (r != max_step_) return Status::FillerStep;
        if (j_ + 1 == entries_) return Status::TrailingFiller;
        continue;
      }
      if (c > filler_) return Status::CodeOutOfRange;
      if (n_ == nnz_) return Status::NnzMismatch;
      emit(next_ - 1, c);
      ++n_;
    }
    return Status::Ok;
  }

  Status finish() const { return n_ == nnz_ ? Status::Ok : Status::NnzMismatch; }

 private:
  size_t entries_, j_ = 0;
  uint32_t filler_;
  uint64_t numel_;
  size_t nnz_, n_ = 0;
  uint32_t max_step_;
  uint64_t next_ = 0;  // position of the current entry plus one: avoids starting at -1
};

// dense() straight from the two Huffman streams (relative indices of alphabet
// 2^index_bits, codes of alphabet filler_code + 1), without materialising them: decodes
// a block of each, walks it, writes it. Every check of huffman::decode_pair() and of
// dense() is made; on a stream error returns Status::Stream with the coder's status in
// *stream_status. `out` may be partly written when an error is returned.
Status huffman_dense(const uint8_t* rel_in, size_t rel_bytes, const uint8_t* rel_lengths,
                     const uint8_t* code_in, size_t code_bytes, const uint8_t* code_lengths,
                     size_t entries, int index_bits, uint32_t filler_code, uint64_t numel, size_t nnz,
                     const uint32_t* book, uint32_t* out, bool out_is_zero, huffman::Status* stream_status);

}  // namespace sparse_index
}  // namespace deepcomp
