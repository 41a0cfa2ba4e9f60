// Context-modelled arithmetic coding of shared weights and of fp32 tensors
// (docs/FORMAT.md, "Arithmetic-coded tensors"). Plain functions over pointers and
// sizes; the model is the same code on both sides, so encoder and decoder cannot drift.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "coder/range_coder.h"  // kMinShift, kMaxShift

namespace deepcomp {
namespace coder {

enum class Status : int {
  Ok = 0,
  BadParams,       // a model parameter out of its range (sizes, scan, context set, shift)
  SymbolOutOfRange,  // encoder: an index >= table size; decoder: a magnitude past its group
  Truncated,       // decoder: the payload ended before all elements were decoded
  TrailingBytes,   // decoder: bytes left after the last element
  Corrupt,         // decoder: the coder state is impossible for a stream we wrote
};

const char* status_message(Status s);

// How a matrix of shared weights is modelled. The matrix view is rows x cols
// (shape[0] x prod(shape[1:])); the table holds `base + nneg + npos` values: in sparse
// mode entry 0 is the zero and base = 1, in dense mode base = 0. Entries
// base .. base+nneg-1 are "negative" (sign 1) with magnitudes 1..nneg, the next npos
// entries are "positive" (sign 0) with magnitudes 1..npos. Which values are called
// negative is the writer's choice (it orders by value); the decoder only maps indices.
struct WeightModel {
  uint64_t rows = 0, cols = 0;
  uint32_t nneg = 0, npos = 0;
  bool sparse = true;       // significance flag per element, row-empty flags
  bool col_major = false;   // scan the matrix view column by column
  int value_ctx = 0;        // 0: one context set; 1: by previous value; 2: previous x above
  int sig_ctx = 0;          // 0: left, above, column seen; 1: also column and row density so far
  int shift = 7;            // adaptation limit, kMinShift..kMaxShift
  // 0: off. Else the scan row is read as an image `period` elements wide (a first layer
  // over pixels, a convolution's kernel rows): the element `period` places back in the
  // same scan row (the one "above" in that image) and its neighbours add to the
  // significance and sign contexts. 1 <= period < scan row length.
  uint32_t period = 0;
  uint32_t codebook = 0;    // float32 codebook entries coded ahead of the weights
};

Status check_model(const WeightModel& m);

// idx: rows*cols table indices in row-major order of the matrix view; book: the
// codebook's bit patterns (m.codebook of them), coded first.
Status encode_weights(const uint16_t* idx, const uint32_t* book, const WeightModel& m,
                      std::vector<uint8_t>& out);
// Decodes exactly rows*cols indices into idx and m.codebook patterns into book.
Status decode_weights(const uint8_t* in, size_t n, const WeightModel& m, uint16_t* idx, uint32_t* book);

// Lossless fp32 (any bit pattern): sign, exponent and mantissa modelled separately.
Status encode_floats(const uint32_t* bits, size_t count, int shift, std::vector<uint8_t>& out);
Status decode_floats(const uint8_t* in, size_t n, size_t count, int shift, uint32_t* bits);

}  // namespace coder
}  // namespace deepcomp
