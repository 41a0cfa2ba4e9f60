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

Status Decoder::init(const uint8_t* data, size_t size, const uint8_t* lengths, size_t alphabet, size_t count) {
  Status st = check_lengths(lengths, alphabet);
  if (st != Status::Ok) return st;
  // Every code is at least one bit long.
  if (size > (SIZE_MAX >> 3) || count > size * 8) return Status::CountTooLarge;
  in_ = data;
  in_bytes_ = size;
  for (size_t s = 0; s < alphabet; ++s) {
    maxl_ = std::max<int>(maxl_, lengths[s]);
    count_[lengths[s]]++;
  }
  count_[0] = 0;
  pbits_ = std::min(maxl_, kPrimaryBits);
  std::vector<uint32_t> codes(alphabet);
  canonical_codes(lengths, alphabet, codes.data());
  uint32_t at = 0;
  for (int l = 1; l <= kMaxCodeLen; ++l) {
    offset_[l] = at;
    at += count_[l];
  }
  sorted_.assign(at, 0);
  uint32_t fill[kMaxCodeLen + 1];
  std::memcpy(fill, offset_, sizeof(fill));
  primary_.assign(size_t{1} << pbits_, 0);
  for (size_t s = 0; s < alphabet; ++s) {
    int l = lengths[s];
    if (!l) continue;
    if (fill[l] == offset_[l]) first_[l] = codes[s];  // symbols come in increasing order
    sorted_[fill[l]++] = static_cast<uint16_t>(s);
    if (l > pbits_) continue;
    size_t lo = static_cast<size_t>(codes[s]) << (pbits_ - l);
    size_t span = size_t{1} << (pbits_ - l);
    uint16_t e = static_cast<uint16_t>(s << 4 | static_cast<unsigned>(l));
    std::fill(primary_.begin() + lo, primary_.begin() + lo + span, e);
  }
  if (count >= kMultiMinCount) {
    const size_t size = size_t{1} << pbits_, mask = size - 1;
    multi_.assign(size, 0);
    for (size_t x = 0; x < size; ++x) {
      uint64_t e = 0;
      int used = 0, n = 0;
      while (n < 4) {
        // The known bits left are x's low (pbits - used); zeros below them do not
        // matter for a code that fits in them.
        uint16_t p = primary_[(x << used) & mask];
        int l = p & 15;
        if (p == 0 || l > pbits_ - used) break;
        e |= static_cast<uint64_t>(p >> 4) << (16 + 12 * n);
        used += l;
        ++n;
      }
      multi_[x] = e | static_cast<uint64_t>(used) << 3 | static_cast<uint64_t>(n);
    }
  }
  return Status::Ok;
}

Status Decoder::finish() const {
  // Whatever is left must be the zero padding of the final byte.
  if (pos_ != in_bytes_ || nbits_ >= 8 || buf_ != 0) return Status::TrailingBits;
  return Status::Ok;
}

Status Decoder::next_block(uint16_t* out, size_t n) {
  Status err = Status::Ok;
  size_t i = 0;
  while (i < n)
    if (!step(out, &i, n, &err)) return err;
  return Status::Ok;
}

Status next_pair_block(Decoder& a, Decoder& b, uint16_t* out_a, uint16_t* out_b, size_t n) {
  // Two independent table-lookup chains in one loop: the CPU overlaps their latencies.
  Status err = Status::Ok;
  size_t i = 0, j = 0;
  while (i < n && j < n) {
    if (!a.step(out_a, &i, n, &err) || !b.step(out_b, &j, n, &err)) return err;
  }
  while (i < n)
    if (!a.step(out_a, &i, n, &err)) return err;
  while (j < n)
    if (!b.step(out_b, &j, n, &err)) return err;
  return Status::Ok;
}

Status decode(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
              uint16_t* out, size_t count) {
  Decoder r;
  Status st = r.init(in, in_bytes, lengths, alphabet, count);
  if (st == Status::Ok) st = r.next_block(out, count);
  return st != Status::Ok ? st : r.finish();
}

Status decode_pair(const uint8_t* in_a, size_t bytes_a, const uint8_t* lengths_a, size_t alphabet_a,
                   uint16_t* out_a, const uint8_t* in_b, size_t bytes_b, const uint8_t* lengths_b,
                   size_t alphabet_b, uint16_t* out_b, size_t count) {
  Decoder a, b;
  Status st = a.init(in_a, bytes_a, lengths_a, alphabet_a, count);
  if (st != Status::Ok) return st;
  st = b.init(in_b, bytes_b, lengths_b, alphabet_b, count);
  if (st != Status::Ok) return st;
  st = next_pair_block(a, b, out_a, out_b, count);
  if (st != Status::Ok) return st;
  st = a.finish();
  return st != Status::Ok ? st : b.finish();
}

Status decode_map(const uint8_t* in, size_t in_bytes, const uint8_t* lengths, size_t alphabet,
                  const uint32_t* table, uint32_t* out, size_t count) {
  Decoder r;
  Status st = r.init(in, in_bytes, lengths, alphabet, count);
  if (st != Status::Ok) return st;
  // Blocks small enough for L1: the symbols never make a round trip through memory.
  uint16_t sym[kBlock];
  for (size_t at = 0; at < count; at += kBlock) {
    size_t n = std::min(kBlock, count - at);
    st = r.next_block(sym, n);
    if (st != Status::Ok) return st;
    for (size_t i = 0; i < n; ++i) out[at + i] = table[sym[i]];
  }
  return r.finish();
}

}  // namespace huffman
}  // namespace deepcomp
