#include "huffman/huffman.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace deepcomp {
namespace huffman {

const char* status_message(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::BadAlphabet: return "alphabet size out of range";
    case Status::BadLength: return "code length above the maximum of 15";
    case Status::IncompleteCode: return "code lengths do not form a complete prefix code";
    case Status::SymbolOutOfRange: return "symbol outside the code table";
    case Status::ShortStream: return "bitstream ends before the stated symbol count";
    case Status::TrailingBits: return "bitstream has bytes or non-zero padding bits after the last symbol";
    case Status::CountTooLarge: return "symbol count larger than the bitstream can hold";
    case Status::OutputTooSmall: return "output buffer too small";
  }
  return "unknown error";
}

Status code_lengths(const uint64_t* freqs, size_t alphabet, int max_len, uint8_t* lengths) {
  if (alphabet == 0 || alphabet > static_cast<size_t>(kMaxAlphabet)) return Status::BadAlphabet;
  if (max_len < 1 || max_len > kMaxCodeLen) return Status::BadLength;
  std::memset(lengths, 0, alphabet);
  std::vector<uint32_t> used;
  for (size_t s = 0; s < alphabet; ++s)
    if (freqs[s] != 0) used.push_back(static_cast<uint32_t>(s));
  const size_t n = used.size();
  if (n == 0) return Status::Ok;
  if (n == 1) {
    lengths[used[0]] = 1;
    return Status::Ok;
  }
  if (n > (size_t{1} << max_len)) return Status::BadLength;
  // Ties broken by symbol so that the result does not depend on the sort's stability.
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) {
    return freqs[a] != freqs[b] ? freqs[a] < freqs[b] : a < b;
  });

  // Package-merge (Larmore & Hirschberg). Level d's list holds the leaves merged with
  // packages of adjacent pairs from level d-1, sorted by weight. Taking the first 2n-2
  // items of the last level, each leaf's code length is the number of selected items
  // that contain it; a selected prefix at level d contains exactly the first
  // (2 * packages in it) items of level d-1, so flags are enough to walk back.
  std::vector<std::vector<uint64_t>> weight(max_len);
  std::vector<std::vector<int32_t>> leaf(max_len);  // leaf symbol, or -1 for a package
  for (size_t i = 0; i < n; ++i) {
    weight[0].push_back(freqs[used[i]]);
    leaf[0].push_back(static_cast<int32_t>(used[i]));
  }
  for (int d = 1; d < max_len; ++d) {
    const auto& pw = weight[d - 1];
    size_t npk = pw.size() / 2;
    size_t i = 0, k = 0;
    while (i < n || k < npk) {
      uint64_t pk = k < npk ? pw[2 * k] + pw[2 * k + 1] : 0;
      if (k >= npk || (i < n && freqs[used[i]] <= pk)) {
        weight[d].push_back(freqs[used[i]]);
        leaf[d].push_back(static_cast<int32_t>(used[i]));
        ++i;
      } else {
        weight[d].push_back(pk);
        leaf[d].push_back(-1);
        ++k;
      }
    }
  }
  size_t take = 2 * n - 2;
  for (int d = max_len - 1; d >= 0 && take > 0; --d) {
    size_t packages = 0;
    for (size_t j = 0; j < take; ++j) {
      int32_t s = leaf[d][j];
      if (s >= 0) ++lengths[s];
      else ++packages;
    }
    take = 2 * packages;
  }
  return Status::Ok;
}

Status check_lengths(const uint8_t* lengths, size_t alphabet) {
  if (alphabet == 0 || alphabet > static_cast<size_t>(kMaxAlphabet)) return Status::BadAlphabet;
  uint64_t kraft = 0;  // in units of 2^-kMaxCodeLen
  size_t used = 0;
  for (size_t s = 0; s < alphabet; ++s) {
    unsigned l = lengths[s];
    if (l > static_cast<unsigned>(kMaxCodeLen)) return Status::BadLength;
    if (l == 0) continue;
    ++used;
    kraft += uint64_t{1} << (kMaxCodeLen - l);
  }
  if (used < 2 || kraft != (uint64_t{1} << kMaxCodeLen)) return Status::IncompleteCode;
  return Status::Ok;
}

namespace {

// Canonical codes: within each length, codes increase with the symbol value.
void canonical_codes(const uint8_t* lengths, size_t alphabet, uint32_t* codes) {
  uint32_t count[kMaxCodeLen + 1] = {0};
  for (size_t s = 0; s < alphabet; ++s) count[lengths[s]]++;
  count[0] = 0;
  uint32_t next[kMaxCodeLen + 2] = {0};
  uint32_t code = 0;
  for (int l = 1; l <= kMaxCodeLen; ++l) {
    code = (code + count[l - 1]) << 1;
    next[l] = code;
  }
  for (size_t s = 0; s < alphabet; ++s)
    codes[s] = lengths[s] ? next[lengths[s]]++ : 0;
}

}  // namespace

size_t encoded_bound(size_t count) { return (count * kMaxCodeLen + 7) / 8 + 8; }

Status encode(const uint16_t* symbols, size_t count, const uint8_t* lengths, size_t alphabet,
              uint8_t* out, size_t out_capacity, size_t* out_bytes, uint64_t* out_bits) {
  Status st = check_lengths(lengths, alphabet);
  if (st != Status::Ok) return st;
  if (out_capacity < encoded_bound(count)) return Status::OutputTooSmall;
  std::vector<uint32_t> codes(alphabet);
  canonical_codes(lengths, alphabet, codes.data());
  uint64_t acc = 0;  // pending bits, left-aligned
  int nacc = 0;
  size_t pos = 0;
  uint64_t bits = 0;
  for (size_t i = 0; i < count; ++i) {
    uint16_t s = symbols[i];
    if (s >= alphabet || lengths[s] == 0) return Status::SymbolOutOfRange;
    int l = lengths[s];
    acc |= static_cast<uint64_t>(codes[s]) << (64 - nacc - l);
    nacc += l;
    bits += l;
    while (nacc >= 8) {
      out[pos++] = static_cast<uint8_t>(acc >> 56);
      acc <<= 8;
      nacc -= 8;
    }
  }
  if (nacc > 0) out[pos++] = static_cast<uint8_t>(acc >> 56);
  *out_bytes = pos;
  *out_bits = bits;
  return Status::Ok;
}

Status decode(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
              uint16_t* out, size_t count) {
  Status st = check_lengths(lengths, alphabet);
  if (st != Status::Ok) return st;
  // Every code is at least one bit long.
  if (in_bytes > (SIZE_MAX >> 3) || count > in_bytes * 8) return Status::CountTooLarge;
  int maxl = 0;
  for (size_t s = 0; s < alphabet; ++s) maxl = std::max<int>(maxl, lengths[s]);
  std::vector<uint32_t> codes(alphabet);
  canonical_codes(lengths, alphabet, codes.data());
  // One entry per maxl-bit prefix: symbol << 4 | code length (12 + 4 bits). The code is
  // complete, so every entry gets filled.
  std::vector<uint16_t> table(size_t{1} << maxl);
  for (size_t s = 0; s < alphabet; ++s) {
    int l = lengths[s];
    if (!l) continue;
    size_t first = static_cast<size_t>(codes[s]) << (maxl - l);
    size_t span = size_t{1} << (maxl - l);
    uint16_t e = static_cast<uint16_t>(s << 4 | static_cast<unsigned>(l));
    std::fill(table.begin() + first, table.begin() + first + span, e);
  }
  // Left-aligned bit buffer. Bits below the `nbits` valid ones may hold look-ahead from
  // a word refill; they equal the stream's next bits, so OR-ing them in again is harmless.
  uint64_t buf = 0;
  int nbits = 0;
  size_t pos = 0;
  const int shift = 64 - maxl;
  size_t i = 0;
  while (i < count) {
    if (in_bytes - pos >= 8) {
      uint64_t w;
      std::memcpy(&w, in + pos, 8);
      w = __builtin_bswap64(w);
      buf |= w >> nbits;
      pos += static_cast<size_t>((63 - nbits) >> 3);
      nbits |= 56;
    } else {
      while (nbits <= 56 && pos < in_bytes) {
        buf |= static_cast<uint64_t>(in[pos++]) << (56 - nbits);
        nbits += 8;
      }
    }
    if (nbits >= maxl) {
      // Every code fits in what is buffered: no per-symbol length check needed.
      while (nbits >= maxl && i < count) {
        uint32_t e = table[buf >> shift];
        int l = static_cast<int>(e & 15u);
        out[i++] = static_cast<uint16_t>(e >> 4);
        buf <<= l;
        nbits -= l;
      }
    } else {
      // Near the end: missing bits read as zero, so check the code really was there.
      uint32_t e = table[buf >> shift];
      int l = static_cast<int>(e & 15u);
      if (l > nbits) return Status::ShortStream;
      out[i++] = static_cast<uint16_t>(e >> 4);
      buf <<= l;
      nbits -= l;
    }
  }
  // Whatever is left must be the zero padding of the final byte.
  if (pos != in_bytes || nbits >= 8 || buf != 0) return Status::TrailingBits;
  return Status::Ok;
}

}  // namespace huffman
}  // namespace deepcomp
