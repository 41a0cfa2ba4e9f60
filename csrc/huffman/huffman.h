// Canonical Huffman coding for small alphabets (docs/FORMAT.md, "Huffman streams").
//
// Plain functions over pointers and sizes; no Python, no allocation the caller did not
// size. Codes are canonical (assigned in order of (length, symbol)) and written MSB
// first, so a stream is fully described by its code lengths.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deepcomp {
namespace huffman {

// Longest code any table may use. 15 keeps the single-level decode table at most
// 32768 entries and leaves room for 4096 symbols (Kraft: 2^15 >= 4096).
constexpr int kMaxCodeLen = 15;
constexpr int kMaxAlphabet = 4096;

enum class Status : int {
  Ok = 0,
  BadAlphabet,        // alphabet size 0 or above kMaxAlphabet
  BadLength,          // a code length above kMaxCodeLen
  IncompleteCode,     // lengths do not form a complete prefix code (Kraft sum != 1)
  SymbolOutOfRange,   // encoder: a symbol >= alphabet size, or one without a code
  ShortStream,        // decoder: the payload ends before `count` symbols
  TrailingBits,       // decoder: bytes left over, or non-zero padding bits
  CountTooLarge,      // decoder: more symbols asked for than the payload can hold
  OutputTooSmall,     // encoder: caller's buffer is smaller than encoded_bound()
};

const char* status_message(Status s);

// Optimal code lengths under the kMaxCodeLen limit (package-merge), from symbol
// frequencies. Symbols with frequency 0 get length 0. With exactly one used symbol that
// symbol gets length 1 (the container stores such streams in "single" mode instead).
Status code_lengths(const uint64_t* freqs, size_t alphabet, int max_len, uint8_t* lengths);

// Checks that `lengths` describe a complete prefix code with at least two symbols.
Status check_lengths(const uint8_t* lengths, size_t alphabet);

// Upper bound on encoded payload bytes for `count` symbols.
size_t encoded_bound(size_t count);

// Encodes `count` symbols; writes ceil(bits / 8) bytes to `out` (zero-padded last byte)
// and stores that byte count in *out_bytes and the exact bit count in *out_bits.
Status encode(const uint16_t* symbols, size_t count, const uint8_t* lengths, size_t alphabet,
              uint8_t* out, size_t out_capacity, size_t* out_bytes, uint64_t* out_bits);

// Decodes exactly `count` symbols from `in[0..in_bytes)`. The payload must be consumed
// exactly: no spare byte, and the padding bits of the last byte must be zero.
Status decode(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
              uint16_t* out, size_t count);

// Decodes two streams of the same length in one interleaved loop (the relative-index and
// cluster-code streams of a shared_sparse tensor); same checks as decode() for each.
Status decode_pair(const uint8_t* in_a, size_t bytes_a, const uint8_t* lengths_a, size_t alphabet_a,
                   uint16_t* out_a, const uint8_t* in_b, size_t bytes_b, const uint8_t* lengths_b,
                   size_t alphabet_b, uint16_t* out_b, size_t count);

}  // namespace huffman
}  // namespace deepcomp
