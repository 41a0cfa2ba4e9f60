// Relative-index expansion of the shared_sparse encoding (docs/FORMAT.md, 3.3).
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

// Walks `entries` (relative index, cluster code) pairs from position -1: each moves the
// position by rel + 1; code == filler_code marks a filler. Writes the flat positions and
// codes of the `nnz` real entries. Never writes more than `nnz` outputs.
Status expand(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
              uint32_t filler_code, uint64_t numel, size_t nnz, int64_t* positions,
              uint8_t* codes_out);

}  // namespace sparse_index
}  // namespace deepcomp
