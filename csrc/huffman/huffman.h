// Canonical Huffman coding for small alphabets (docs/FORMAT.md, "Huffman streams").
//
// Plain functions over pointers and sizes; no Python, no allocation the caller did not
// size. Codes are canonical (assigned in order of (length, symbol)) and written MSB
// first, so a stream is fully described by its code lengths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

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

// Symbols per block when decoded streams feed another pass (decode_map, the fused
// sparse decode): small enough to stay in L1, big enough that the per-block call is free.
constexpr size_t kBlock = 512;

// Decodes exactly `count` symbols of `alphabet` and maps each through table[alphabet]
// (codebook bit patterns): out[i] = table[symbol i]. Same checks as decode().
Status decode_map(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
                  const uint32_t* table, uint32_t* out, size_t count);

// One stream being decoded, for callers that consume symbols block by block: init(),
// then next_block() (or next_pair_block() for two streams) until `count` symbols are
// out, then finish(), which checks the payload was used up exactly.
//
// A left-aligned bit buffer and a two-level lookup. Bits below the `nbits_` valid ones
// may hold look-ahead from a word refill; they equal the stream's next bits, so OR-ing
// them in again later is harmless. Codes of up to kPrimaryBits bits (nearly every
// symbol, as long codes are rare by construction) resolve in one lookup in a table
// small enough for L1; longer ones walk the canonical code's per-length ranges.
class Decoder {
 public:
  static constexpr int kPrimaryBits = 11;
  // Streams this long get a second table that yields up to 4 symbols per lookup (all
  // codes that fit in the primary prefix); below it, building it costs more than it saves.
  static constexpr size_t kMultiMinCount = 8192;

  // Checks the lengths and that `count` symbols can fit in `size` bytes.
  Status init(const uint8_t* data, size_t size, const uint8_t* lengths, size_t alphabet, size_t count);
  // The next n symbols; ShortStream if the payload runs out, IncompleteCode on a gap.
  Status next_block(uint16_t* out, size_t n);
  Status finish() const;

  inline void refill() {
    if (in_bytes_ - pos_ >= 8) {
      uint64_t w;
      __builtin_memcpy(&w, in_ + pos_, 8);
      w = __builtin_bswap64(w);
      buf_ |= w >> nbits_;
      pos_ += static_cast<size_t>((63 - nbits_) >> 3);
      nbits_ |= 56;
    } else {
      while (nbits_ <= 56 && pos_ < in_bytes_) {
        buf_ |= static_cast<uint64_t>(in_[pos_++]) << (56 - nbits_);
        nbits_ += 8;
      }
    }
  }
  // The longest code is buffered: next_unchecked() is safe.
  inline bool buffered() const { return nbits_ >= maxl_; }

  // At least one more symbol into out[*i .. n): up to four multi-symbol lookups when
  // the bits for them are buffered and out has room for four, else one symbol, checked
  // near the end of the payload. False on a malformed stream, with *err set.
  inline bool step(uint16_t* out, size_t* i, size_t n, Status* err) {
    refill();
    size_t at = *i;
    if (!multi_.empty() && nbits_ >= 4 * pbits_) {
      for (int k = 0; k < 4 && at + 4 <= n; ++k) {
        uint64_t e = multi_[buf_ >> (64 - pbits_)];
        unsigned cnt = static_cast<unsigned>(e & 7u);
        if (cnt == 0) break;  // a code longer than the prefix: the single path below
        out[at] = static_cast<uint16_t>((e >> 16) & 0xFFFu);
        out[at + 1] = static_cast<uint16_t>((e >> 28) & 0xFFFu);
        out[at + 2] = static_cast<uint16_t>((e >> 40) & 0xFFFu);
        out[at + 3] = static_cast<uint16_t>(e >> 52);
        int len = static_cast<int>((e >> 3) & 15u);
        at += cnt;
        buf_ <<= len;
        nbits_ -= len;
      }
      if (at != *i) {
        *i = at;
        return true;
      }
    }
    bool ok = buffered() ? next_unchecked(&out[at]) : next_checked(&out[at]);
    if (!ok) {
      *err = buffered() ? Status::IncompleteCode : Status::ShortStream;
      return false;
    }
    *i = at + 1;
    return true;
  }
  inline bool next_unchecked(uint16_t* sym) {
    int l;
    *sym = peek(&l);
    buf_ <<= l;
    nbits_ -= l;
    return l != 0;
  }
  // Near the end of the payload: missing bits read as zero, so check the code was there.
  inline bool next_checked(uint16_t* sym) {
    int l;
    uint16_t v = peek(&l);
    if (l == 0 || l > nbits_) return false;
    buf_ <<= l;
    nbits_ -= l;
    *sym = v;
    return true;
  }

 private:
  // The code under the buffer's top bits: its symbol, and its length in *len (0 if none,
  // which a complete code never produces).
  inline uint16_t peek(int* len) const {
    uint32_t e = primary_[buf_ >> (64 - pbits_)];
    if (e) {
      *len = static_cast<int>(e & 15u);
      return static_cast<uint16_t>(e >> 4);
    }
    for (int l = pbits_ + 1; l <= maxl_; ++l) {
      uint32_t c = static_cast<uint32_t>(buf_ >> (64 - l));
      if (c - first_[l] < count_[l]) {
        *len = l;
        return sorted_[offset_[l] + (c - first_[l])];
      }
    }
    *len = 0;
    return 0;
  }

  const uint8_t* in_ = nullptr;
  size_t in_bytes_ = 0;
  size_t pos_ = 0;
  uint64_t buf_ = 0;
  int nbits_ = 0;
  int maxl_ = 0;
  int pbits_ = 0;
  std::vector<uint16_t> primary_;  // pbits-bit prefix -> symbol << 4 | length, or 0: longer code
  // pbits-bit prefix -> the codes wholly inside it, at most 4: count (bits 0-2, 0 when
  // the first code is longer), their total length (bits 3-6), symbols (12 bits each
  // from bit 16). Empty for short streams.
  std::vector<uint64_t> multi_;
  uint32_t first_[kMaxCodeLen + 1] = {0};   // first canonical code of each length
  uint32_t count_[kMaxCodeLen + 1] = {0};   // codes of each length
  uint32_t offset_[kMaxCodeLen + 1] = {0};  // index in `sorted_` of each length's first symbol
  std::vector<uint16_t> sorted_;            // symbols by (length, symbol)
};

// n symbols from each of two streams in one interleaved loop (their lookup latencies
// overlap): what decode_pair() runs, for callers that consume the pair block by block.
Status next_pair_block(Decoder& a, Decoder& b, uint16_t* out_a, uint16_t* out_b, size_t n);

}  // namespace huffman
}  // namespace deepcomp
