// Relative-index walk of the shared_sparse encoding (docs/FORMAT.md, 3.3).
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace sparse_index
}  // namespace deepcomp
