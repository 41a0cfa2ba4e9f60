// Adaptive binary range coder (docs/FORMAT.md, "Arithmetic-coded streams").
//
// Why a binary coder with adaptive bit models rather than rANS with a static table:
// the symbols are binarised (significance, sign, magnitude tree), and every bin has its
// own context chosen from already-coded neighbours, so the model changes at every bin.
// rANS needs its frequencies before it encodes (it codes backwards), which suits static
// models; a binary range coder adapts in both directions with one shared update rule.
// Everything is integer arithmetic on fixed widths, so every platform produces and
// decodes the same bytes.
//
// The coder follows the carry-less-in-the-decoder scheme of LZMA's range coder: a 32-bit
// range, the encoder keeps a 33-bit `low` plus one cached byte and a run of pending 0xFF
// bytes to propagate a carry. The first byte that scheme emits is always 0 and is not
// written. The decoder reads exactly the bytes the encoder wrote (4 to start with, one
// per renormalisation), so it can reject both a truncated payload and spare bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace deepcomp {
namespace coder {

constexpr int kProbBits = 15;
constexpr uint32_t kProbOne = 1u << kProbBits;
constexpr uint32_t kTop = 1u << 24;
constexpr int kMinShift = 4;   // writers may pick the adaptation limit in this range
constexpr int kMaxShift = 10;

// One adaptive bit model: p0 = P(bit == 0) in units of 2^-15, and how many times it has
// been updated. The step starts large (a fresh context learns like a Laplace estimator,
// step ~ 1/(n+2)) and shrinks to 2^-limit, so small tensors learn fast and big ones
// settle on precise probabilities.
struct Bit {
  uint16_t p0 = kProbOne / 2;
  uint16_t n = 0;
};

inline int step_shift(uint16_t n, int limit) {
  // floor(log2(n + 2)): 1 for n = 0, 2 for n = 2..5, 3 for n = 6..13, ...
  uint32_t v = static_cast<uint32_t>(n) + 2;
  int s = 31 - __builtin_clz(v);
  return s < limit ? s : limit;
}

inline void adapt(Bit& b, int bit, int limit) {
  int s = step_shift(b.n, limit);
  // Both candidates, then a select: the decoder's bits are data-dependent, and a branch
  // here mispredicts on every surprise. With s >= 1, `down` stays >= 1 (p0 >> s < p0)
  // and `up` stays <= kProbOne - 1 ((kProbOne - p0) >> s < kProbOne - p0), so neither
  // half of the range can become empty.
  uint32_t p = b.p0;
  uint32_t down = p - (p >> s);
  uint32_t up = p + ((kProbOne - p) >> s);
  b.p0 = static_cast<uint16_t>(bit ? down : up);
  b.n = static_cast<uint16_t>(b.n + (b.n < 0xFFFF));
}

class Encoder {
 public:
  explicit Encoder(std::vector<uint8_t>& out, int limit) : out_(out), limit_(limit) {}

  void put(Bit& b, int bit) {
    uint32_t bound = (range_ >> kProbBits) * b.p0;
    // Selects, not a branch: magnitude-tree bits are close to coin flips.
    if (bit) {
      low_ += bound;
      range_ -= bound;
    } else {
      range_ = bound;
    }
    adapt(b, bit, limit_);
    while (range_ < kTop) {
      range_ <<= 8;
      shift_low();
    }
  }

  // n raw bits (MSB first) at probability 1/2, for bits no model can predict.
  void put_raw(uint32_t v, int n) {
    for (int i = n - 1; i >= 0; --i) {
      range_ >>= 1;
      if ((v >> i) & 1) low_ += range_;
      while (range_ < kTop) {
        range_ <<= 8;
        shift_low();
      }
    }
  }

  void finish() {
    for (int i = 0; i < 5; ++i) shift_low();
  }

 private:
  void shift_low() {
    if (static_cast<uint32_t>(low_) < 0xFF000000u || (low_ >> 32) != 0) {
      uint8_t carry = static_cast<uint8_t>(low_ >> 32);
      uint8_t temp = cache_;
      do {
        if (started_)
          out_.push_back(static_cast<uint8_t>(temp + carry));
        started_ = true;  // the very first byte is always 0: not written
        temp = 0xFF;
      } while (--pending_ != 0);
      cache_ = static_cast<uint8_t>(low_ >> 24);
    }
    ++pending_;
    low_ = (low_ & 0x00FFFFFFu) << 8;
  }

  std::vector<uint8_t>& out_;
  int limit_;
  uint64_t low_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
  uint8_t cache_ = 0;
  uint64_t pending_ = 1;
  bool started_ = false;
};

class Decoder {
 public:
  Decoder(const uint8_t* in, size_t n, int limit) : p_(in), end_(in + n), limit_(limit) {
    for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | next();
    // A valid stream always has code < range; anything else is not one of ours.
    if (code_ == 0xFFFFFFFFu) bad_ = true;
  }

  int get(Bit& b) {
    uint32_t bound = (range_ >> kProbBits) * b.p0;
    uint32_t bit = code_ >= bound;
    uint32_t mask = 0u - bit;  // branch-free: see adapt()
    code_ -= bound & mask;
    range_ = (bound & ~mask) | ((range_ - bound) & mask);
    adapt(b, static_cast<int>(bit), limit_);
    while (range_ < kTop) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
    return static_cast<int>(bit);
  }

  // The same bin as get(), with a branch instead of selects: for bins that are nearly
  // always one value (significance and empty-row flags of a pruned layer) the branch is
  // predicted, so the next bin's context and probability need not wait for this
  // comparison, which the select version puts on the critical path of every element.
  int get_skewed(Bit& b) {
    uint32_t bound = (range_ >> kProbBits) * b.p0;
    int s = step_shift(b.n, limit_);
    uint32_t p = b.p0;
    b.n = static_cast<uint16_t>(b.n + (b.n < 0xFFFF));
    int bit;
    if (__builtin_expect(code_ < bound, 1)) {
      range_ = bound;
      b.p0 = static_cast<uint16_t>(p + ((kProbOne - p) >> s));
      bit = 0;
    } else {
      code_ -= bound;
      range_ -= bound;
      b.p0 = static_cast<uint16_t>(p - (p >> s));
      bit = 1;
    }
    while (range_ < kTop) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
    return bit;
  }

  // `depth` bins down a binary tree of adaptive bits (node 1 the root, children 2k and
  // 2k+1), MSB first: the same bins as get() on each node. Both children's state is
  // loaded before this node's bit is known and the bit then selects one, so the next
  // bin waits for a select instead of a load whose address needs the bit.
  uint32_t get_tree(Bit* nodes, int depth) {
    if (depth == 0) return 0;
    uint32_t node = 1;
    uint32_t p = nodes[1].p0, n = nodes[1].n;
    for (int i = depth; i > 0; --i) {
      uint32_t pl = 0, pr = 0, nl = 0, nr = 0;
      if (i > 1) {
        const Bit* ch = nodes + 2 * node;
        pl = ch[0].p0;
        nl = ch[0].n;
        pr = ch[1].p0;
        nr = ch[1].n;
      }
      uint32_t bound = (range_ >> kProbBits) * p;
      uint32_t bit = code_ >= bound;
      uint32_t mask = 0u - bit;
      code_ -= bound & mask;
      range_ = (bound & ~mask) | ((range_ - bound) & mask);
      int s = step_shift(static_cast<uint16_t>(n), limit_);
      uint32_t down = p - (p >> s);
      uint32_t up = p + ((kProbOne - p) >> s);
      nodes[node].p0 = static_cast<uint16_t>((down & mask) | (up & ~mask));
      nodes[node].n = static_cast<uint16_t>(n + (n < 0xFFFF));
      while (range_ < kTop) {
        range_ <<= 8;
        code_ = (code_ << 8) | next();
      }
      node = 2 * node + bit;
      p = (pr & mask) | (pl & ~mask);
      n = (nr & mask) | (nl & ~mask);
    }
    return node - (1u << depth);
  }

  uint32_t get_raw(int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) {
      range_ >>= 1;
      uint32_t bit = code_ >= range_;
      if (bit) code_ -= range_;
      v = (v << 1) | bit;
      while (range_ < kTop) {
        range_ <<= 8;
        code_ = (code_ << 8) | next();
      }
    }
    return v;
  }

  // True once the decoder has asked for a byte past the end of its input (its reads are
  // then zeros: no out-of-bounds access, and the caller reports a truncated stream).
  bool overrun() const { return overrun_; }
  bool bad() const { return bad_ || code_ >= range_; }
  // Bytes not consumed (must be 0 for a well-formed stream).
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

 private:
  uint32_t next() {
    if (p_ < end_) return *p_++;
    overrun_ = true;
    return 0;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  int limit_;
  uint32_t range_ = 0xFFFFFFFFu;
  uint32_t code_ = 0;
  bool overrun_ = false;
  bool bad_ = false;
};

}  // namespace coder
}  // namespace deepcomp
