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

namespace {

// One stream being decoded: a left-aligned bit buffer and a two-level lookup. Bits
// below the `nbits` valid ones may hold look-ahead from a word refill; they equal the
// stream's next bits, so OR-ing them in again later is harmless.
//
// Codes of up to kPrimaryBits bits (nearly every symbol decoded, as long codes are rare
// by construction) resolve in one lookup in a table small enough for L1; longer ones
// walk the canonical code's per-length ranges.
constexpr int kPrimaryBits = 11;

struct Reader {
  const uint8_t* in = nullptr;
  size_t in_bytes = 0;
  size_t pos = 0;
  uint64_t buf = 0;
  int nbits = 0;
  int maxl = 0;
  int pbits = 0;
  std::vector<uint16_t> primary;  // pbits-bit prefix -> symbol << 4 | length, or 0: longer code
  uint32_t first[kMaxCodeLen + 1] = {0};   // first canonical code of each length
  uint32_t count[kMaxCodeLen + 1] = {0};   // codes of each length
  uint32_t offset[kMaxCodeLen + 1] = {0};  // index in `sorted` of each length's first symbol
  std::vector<uint16_t> sorted;            // symbols by (length, symbol)

  Status init(const uint8_t* data, size_t size, const uint8_t* lengths, size_t alphabet, size_t count_) {
    Status st = check_lengths(lengths, alphabet);
    if (st != Status::Ok) return st;
    // Every code is at least one bit long.
    if (size > (SIZE_MAX >> 3) || count_ > size * 8) return Status::CountTooLarge;
    in = data;
    in_bytes = size;
    for (size_t s = 0; s < alphabet; ++s) {
      maxl = std::max<int>(maxl, lengths[s]);
      count[lengths[s]]++;
    }
    count[0] = 0;
    pbits = std::min(maxl, kPrimaryBits);
    std::vector<uint32_t> codes(alphabet);
    canonical_codes(lengths, alphabet, codes.data());
    uint32_t at = 0;
    for (int l = 1; l <= kMaxCodeLen; ++l) {
      offset[l] = at;
      at += count[l];
    }
    sorted.assign(at, 0);
    uint32_t fill[kMaxCodeLen + 1];
    std::memcpy(fill, offset, sizeof(fill));
    primary.assign(size_t{1} << pbits, 0);
    for (size_t s = 0; s < alphabet; ++s) {
      int l = lengths[s];
      if (!l) continue;
      if (fill[l] == offset[l]) first[l] = codes[s];  // symbols come in increasing order
      sorted[fill[l]++] = static_cast<uint16_t>(s);
      if (l > pbits) continue;
      size_t lo = static_cast<size_t>(codes[s]) << (pbits - l);
      size_t span = size_t{1} << (pbits - l);
      uint16_t e = static_cast<uint16_t>(s << 4 | static_cast<unsigned>(l));
      std::fill(primary.begin() + lo, primary.begin() + lo + span, e);
    }
    return Status::Ok;
  }

  // The code under the buffer's top bits: its symbol, and its length in *len (0 if none,
  // which a complete code never produces).
  inline uint16_t peek(int* len) const {
    uint32_t e = primary[buf >> (64 - pbits)];
    if (e) {
      *len = static_cast<int>(e & 15u);
      return static_cast<uint16_t>(e >> 4);
    }
    for (int l = pbits + 1; l <= maxl; ++l) {
      uint32_t c = static_cast<uint32_t>(buf >> (64 - l));
      if (c - first[l] < count[l]) {
        *len = l;
        return sorted[offset[l] + (c - first[l])];
      }
    }
    *len = 0;
    return 0;
  }

  inline void refill() {
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
  }

  // Caller guarantees nbits >= maxl: the whole code is buffered.
  inline bool next_unchecked(uint16_t* sym) {
    int l;
    *sym = peek(&l);
    buf <<= l;
    nbits -= l;
    return l != 0;
  }

  // Near the end of the payload: missing bits read as zero, so check the code was there.
  inline bool next_checked(uint16_t* sym) {
    int l;
    uint16_t v = peek(&l);
    if (l == 0 || l > nbits) return false;
    buf <<= l;
    nbits -= l;
    *sym = v;
    return true;
  }

  // Whatever is left must be the zero padding of the final byte.
  Status finish() const {
    if (pos != in_bytes || nbits >= 8 || buf != 0) return Status::TrailingBits;
    return Status::Ok;
  }
};

}  // namespace

Status decode(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
              uint16_t* out, size_t count) {
  Reader r;
  Status st = r.init(in, in_bytes, lengths, alphabet, count);
  if (st != Status::Ok) return st;
  size_t i = 0;
  while (i < count) {
    r.refill();
    if (r.nbits >= r.maxl) {
      while (r.nbits >= r.maxl && i < count)
        if (!r.next_unchecked(&out[i++])) return Status::IncompleteCode;
    } else if (!r.next_checked(&out[i++])) {
      return Status::ShortStream;
    }
  }
  return r.finish();
}

Status decode_pair(const uint8_t* in_a, size_t bytes_a, const uint8_t* lengths_a, size_t alphabet_a,
                   uint16_t* out_a, const uint8_t* in_b, size_t bytes_b, const uint8_t* lengths_b,
                   size_t alphabet_b, uint16_t* out_b, size_t count) {
  Reader a, b;
  Status st = a.init(in_a, bytes_a, lengths_a, alphabet_a, count);
  if (st != Status::Ok) return st;
  st = b.init(in_b, bytes_b, lengths_b, alphabet_b, count);
  if (st != Status::Ok) return st;
  // Two independent table-lookup chains in one loop: the CPU overlaps their latencies.
  size_t i = 0;
  while (i < count) {
    a.refill();
    b.refill();
    if (a.nbits >= a.maxl && b.nbits >= b.maxl) {
      while (a.nbits >= a.maxl && b.nbits >= b.maxl && i < count) {
        bool ok = a.next_unchecked(&out_a[i]);
        ok &= b.next_unchecked(&out_b[i]);
        if (!ok) return Status::IncompleteCode;
        ++i;
      }
    } else {
      if (!a.next_checked(&out_a[i]) || !b.next_checked(&out_b[i])) return Status::ShortStream;
      ++i;
    }
  }
  st = a.finish();
  return st != Status::Ok ? st : b.finish();
}

}  // namespace huffman
}  // namespace deepcomp
