#include "huffman/sparse_index.h"

#include <algorithm>
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
    case Status::Stream: return "malformed Huffman stream";
  }
  return "unknown error";
}

namespace {

template <typename Emit>
Status walk(const uint16_t* rel, const uint16_t* codes, size_t entries, int index_bits,
            uint32_t filler_code, uint64_t numel, size_t nnz, Emit emit) {
  Walker w(entries, index_bits, filler_code, numel, nnz);
  Status st = w.start();
  if (st == Status::Ok) st = w.feed(rel, codes, entries, emit);
  return st != Status::Ok ? st : w.finish();
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

Status huffman_dense(const uint8_t* rel_in, size_t rel_bytes, const uint8_t* rel_lengths,
                     const uint8_t* code_in, size_t code_bytes, const uint8_t* code_lengths,
                     size_t entries, int index_bits, uint32_t filler_code, uint64_t numel, size_t nnz,
                     const uint32_t* book, uint32_t* out, bool out_is_zero, huffman::Status* stream_status) {
  *stream_status = huffman::Status::Ok;
  Walker w(entries, index_bits, filler_code, numel, nnz);
  Status st = w.start();
  if (st != Status::Ok) return st;
  huffman::Decoder rel, code;
  huffman::Status hs = rel.init(rel_in, rel_bytes, rel_lengths, size_t{1} << index_bits, entries);
  if (hs == huffman::Status::Ok) hs = code.init(code_in, code_bytes, code_lengths, filler_code + 1, entries);
  if (hs != huffman::Status::Ok) {
    *stream_status = hs;
    return Status::Stream;
  }
  if (!out_is_zero) std::memset(out, 0, numel * sizeof(uint32_t));
  uint16_t r[huffman::kBlock], c[huffman::kBlock];
  for (size_t at = 0; at < entries; at += huffman::kBlock) {
    size_t n = std::min(huffman::kBlock, entries - at);
    hs = huffman::next_pair_block(rel, code, r, c, n);
    if (hs != huffman::Status::Ok) {
      *stream_status = hs;
      return Status::Stream;
    }
    st = w.feed(r, c, n, [&](uint64_t p, uint32_t v) { out[p] = book[v]; });
    if (st != Status::Ok) return st;
  }
  hs = rel.finish();
  if (hs == huffman::Status::Ok) hs = code.finish();
  if (hs != huffman::Status::Ok) {
    *stream_status = hs;
    return Status::Stream;
  }
  return w.finish();
}

}  // namespace sparse_index
}  // namespace deepcomp
