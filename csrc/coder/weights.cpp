#include "coder/weights.h"

#include <algorithm>

#include "coder/range_coder.h"

namespace deepcomp {
namespace coder {

const char* status_message(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::BadParams: return "model parameters out of range";
    case Status::SymbolOutOfRange: return "a coded value lies outside the codebook";
    case Status::Truncated: return "arithmetic-coded payload ends before the last element (truncated)";
    case Status::TrailingBytes: return "spare bytes after the last element of an arithmetic-coded payload";
    case Status::Corrupt: return "arithmetic-coded payload is inconsistent (corrupted)";
  }
  return "unknown error";
}

namespace {

// The model is written once and driven by either side: Enc::bit codes the bit it is
// given and returns it, Dec::bit ignores its argument and returns the decoded bit.
struct Enc {
  Encoder c;
  int bit(Bit& b, int v) {
    c.put(b, v);
    return v;
  }
  int flag(Bit& b, int v) { return bit(b, v); }
  uint32_t raw(uint32_t v, int n) {
    c.put_raw(v, n);
    return v;
  }
};

struct Dec {
  Decoder c;
  int bit(Bit& b, int) { return c.get(b); }
  int flag(Bit& b, int) { return c.get_skewed(b); }
  uint32_t raw(uint32_t, int n) { return c.get_raw(n); }
};

int ceil_log2(uint32_t v) {
  int d = 0;
  while ((1u << d) < v) ++d;
  return d;
}

// Floats: sign, exponent (8-bit tree), the top 4 mantissa bits (tree under the
// exponent's high bits is not worth its contexts at bias sizes), 19 low bits one
// adaptive model per position (they catch exact values such as 0.0, 1.0, 0.5).
struct FloatModel {
  Bit sign;
  Bit exp[256];
  Bit mant_hi[16];
  Bit mant_lo[19];

  template <class IO>
  uint32_t code(IO& io, uint32_t v) {
    uint32_t s = static_cast<uint32_t>(io.bit(sign, static_cast<int>(v >> 31)));
    uint32_t e = tree(io, exp, 8, (v >> 23) & 0xFF);
    uint32_t mh = tree(io, mant_hi, 4, (v >> 19) & 15);
    uint32_t ml = 0;
    for (int i = 18; i >= 0; --i) ml = (ml << 1) | static_cast<uint32_t>(io.bit(mant_lo[i], (v >> i) & 1));
    return s << 31 | e << 23 | mh << 19 | ml;
  }

  template <class IO>
  static uint32_t tree(IO& io, Bit* nodes, int depth, uint32_t x) {
    uint32_t node = 1;
    for (int i = depth - 1; i >= 0; --i) node = (node << 1) | static_cast<uint32_t>(io.bit(nodes[node], (x >> i) & 1));
    return node - (1u << depth);
  }
};

class WeightCoder {
 public:
  explicit WeightCoder(const WeightModel& m)
      : m_(m),
        depth_(ceil_log2(std::max(m.nneg, m.npos))),
        groupmax_(std::max<uint32_t>(1, std::max(m.nneg, m.npos))),
        base_(m.sparse ? 1 : 0),
        R_(m.col_major ? m.cols : m.rows),
        C_(m.col_major ? m.rows : m.cols) {
    size_t nctx = m.value_ctx == 0 ? 1 : m.value_ctx == 1 ? 4 : 16;
    tree_.assign(nctx << depth_, Bit());
    if (m.sparse) {
      seen_.assign(C_, 0);
      colctx_.assign(C_, 0);
    }
    sig_per_ = m.sig_ctx ? 96 : 8;
    sig_.assign(m.period ? 2 * sig_per_ : sig_per_, Bit());
    // The value contexts' magnitude buckets, as tables: the division in bucket() would
    // otherwise sit between one value and the next one's first bin.
    for (uint32_t mag = 0; mag <= groupmax_; ++mag) mag_bucket_.push_back(static_cast<uint8_t>(bucket(mag)));
    for (uint32_t v = 0; v < base_ + m.nneg + m.npos; ++v) idx_bucket_.push_back(static_cast<uint8_t>(bucket(mag_of(static_cast<uint16_t>(v)))));
  }

  // Drives the whole scan; `idx` is read (encoder) or written (decoder). Returns false
  // when the decoder stopped early (truncated input or a value outside its group).
  template <class IO>
  Status run(IO& io, uint16_t* idx, uint32_t* book) {
    Status st = codebook(io, book);
    if (st != Status::Ok) return st;
    const uint64_t cols = m_.cols;
    // scan (r, c) -> position in the row-major matrix view
    const uint64_t step_c = m_.col_major ? cols : 1;
    const uint64_t step_r = m_.col_major ? 1 : cols;
    uint32_t prev_mag = 0;
    int prev_sign = 0;  // 0 none yet, 1 positive, 2 negative
    int prev_empty = 0;
    const uint64_t P = m_.period;
    for (uint64_t r = 0; r < R_; ++r) {
      uint16_t* row = idx + r * step_r;
      const uint16_t* above = r ? idx + (r - 1) * step_r : nullptr;
      if (m_.sparse) {
        int any = 0;
        if (IO::kEncoding)
          for (uint64_t c = 0; c < C_ && !any; ++c) any = row[c * step_c] != 0;
        any = io.flag(row_bits_[prev_empty], any);
        prev_empty = !any;
        if (!any) {
          if (!IO::kEncoding)
            for (uint64_t c = 0; c < C_; ++c) row[c * step_c] = 0;
          continue;
        }
        // The column-density part of every significance context changes only when that
        // column is coded, so it is set up once per row; the element above is read in the
        // loop (a separate pass would stride through a column-major scan twice).
        column_contexts(r);
        const uint8_t* colctx = colctx_.data();
        int row_has = 0, left = 0;
        uint64_t row_nz = 0;
        // row density buckets (row_nz/(c+1) in 64ths >= 4, >= 10), as column limits:
        // 64 * nz >= 4 * (c+1)  <=>  c < 16 * nz;  64 * nz >= 10 * (c+1)  <=>  c < (32 * nz) / 5
        uint64_t lim1 = 0, lim2 = 0;
        size_t rbase = 0;
        const bool dens = m_.sig_ctx != 0;
        for (uint64_t c = 0; c < C_; ++c) {
          uint16_t v = IO::kEncoding ? row[c * step_c] : 0;
          if (IO::kEncoding && v >= base_ + m_.nneg + m_.npos) return Status::SymbolOutOfRange;
          int sig;
          if (c + 1 == C_ && !row_has) {
            sig = 1;  // the row is not empty, so its last element must be the non-zero
          } else {
            int up = above ? above[c * step_c] != 0 : 0;
            size_t ctx = static_cast<size_t>(left | up << 1 | colctx[c]);
            if (dens) ctx += rbase + 24 * static_cast<size_t>((c < lim1) + (c < lim2));
            if (P && c >= P && row[(c - P) * step_c] != 0) ctx += sig_per_;
            sig = io.flag(sig_[ctx], v != 0);
          }
          if (sig) {
            // with a period, "above" is the element above in the row's image
            uint16_t a = P ? (c >= P ? row[(c - P) * step_c] : 0) : above ? above[c * step_c] : 0;
            Status st = value(io, v, prev_mag, prev_sign, a, P ? neighbour_sign(row, c, step_c) : 0);
            if (st != Status::Ok) return st;
            if (seen_[c] < 0xFFFFFFFFu) ++seen_[c];
            row_has = 1;
            ++row_nz;
            lim1 = 16 * row_nz;
            lim2 = (32 * row_nz) / 5;
            rbase = 24;
            left = 1;
          } else {
            v = 0;
            left = 0;
          }
          if (!IO::kEncoding) row[c * step_c] = v;
        }
      } else {
        for (uint64_t c = 0; c < C_; ++c) {
          uint16_t v = IO::kEncoding ? row[c * step_c] : 0;
          if (IO::kEncoding && v >= m_.nneg + m_.npos) return Status::SymbolOutOfRange;
          uint16_t a = P ? (c >= P ? row[(c - P) * step_c] : 0xFFFF) : above ? above[c * step_c] : 0xFFFF;
          Status st = value(io, v, prev_mag, prev_sign, a, P ? neighbour_sign(row, c, step_c) : 0);
          if (st != Status::Ok) return st;
          if (!IO::kEncoding) row[c * step_c] = v;
        }
      }
      if constexpr (!IO::kEncoding) {
        if (io.c.overrun()) return Status::Truncated;  // stop early on garbage
      }
    }
    return Status::Ok;
  }

 private:
  // colctx_[c] = column c's bucket << 2, the part of its significance context in row r
  // that neither `left` nor `up` gives. Column density so far (dead inputs, busy inputs)
  // and row density so far (busy neurons) both vary a lot across a pruned layer. The
  // buckets are of seen/(r+1) in 64ths, by multiplication: x < t <=> seen*64 < t*(r+1).
  void column_contexts(uint64_t r) {
    const uint64_t rr = r + 1;
    const uint32_t* seen = seen_.data();
    uint8_t* out = colctx_.data();
    for (uint64_t c = 0; c < C_; ++c) {
      int cb;
      if (m_.sig_ctx == 0) {
        cb = seen[c] != 0;
      } else {
        uint64_t xs = uint64_t{seen[c]} * 64;
        cb = (seen[c] != 0) + (xs >= 2 * rr) + (xs >= 4 * rr) + (xs >= 8 * rr) + (xs >= 16 * rr);
      }
      out[c] = static_cast<uint8_t>(cb << 2);
    }
  }

  uint32_t mag_of(uint16_t v) const {
    if (v < base_) return 0;
    uint32_t t = v - base_;
    return t < m_.nneg ? t + 1 : t - m_.nneg + 1;
  }
  // -1, 0, +1 per element: zero, or the sign of its table entry
  int sign_of(uint16_t v) const { return v < base_ ? 0 : (v - base_ < m_.nneg ? -1 : 1); }

  // With a period: 0 / 1 / 2 for the sum of the signs of the image neighbours already
  // coded (left, and the three above) being zero / positive / negative. Trained first
  // layers and kernels are smooth images, so neighbours mostly share their sign.
  int neighbour_sign(const uint16_t* row, uint64_t c, uint64_t step_c) const {
    const uint64_t P = m_.period;
    int s = c ? sign_of(row[(c - 1) * step_c]) : 0;
    if (c >= P) {
      const uint64_t u = c - P;
      s += sign_of(row[u * step_c]);
      if (u) s += sign_of(row[(u - 1) * step_c]);
      if (u + 1 < c) s += sign_of(row[(u + 1) * step_c]);
    }
    return s > 0 ? 1 : s < 0 ? 2 : 0;
  }

  int bucket(uint32_t mag) const { return mag == 0 ? 0 : 1 + static_cast<int>((mag - 1) * 3 / groupmax_); }

  // Codes one non-zero (sparse) or any (dense) element: sign, then magnitude - 1 down a
  // binary tree whose nodes are adaptive bits. v is in/out.
  template <class IO>
  Status value(IO& io, uint16_t& v, uint32_t& prev_mag, int& prev_sign, uint16_t above, int nbr) {
    int neg = 0;
    uint32_t mag = 0;
    if (IO::kEncoding) {
      uint32_t t = v - base_;
      neg = t < m_.nneg;
      mag = neg ? t + 1 : t - m_.nneg + 1;
    }
    if (m_.nneg && m_.npos)
      neg = io.bit(sign_[prev_sign * 3 + nbr], neg);
    else
      neg = m_.nneg != 0;
    uint32_t group = neg ? m_.nneg : m_.npos;
    size_t ctx = 0;
    // prev_mag <= groupmax_ and above < the table size (both are values already coded)
    if (m_.value_ctx == 1) ctx = mag_bucket_[prev_mag];
    if (m_.value_ctx == 2) ctx = mag_bucket_[prev_mag] * 4u + (above == 0xFFFF ? 0u : idx_bucket_[above]);
    Bit* nodes = tree_.data() + (ctx << depth_);
    uint32_t x = mag ? mag - 1 : 0;
    if constexpr (IO::kEncoding) {
      uint32_t node = 1;
      for (int i = depth_ - 1; i >= 0; --i) node = (node << 1) | static_cast<uint32_t>(io.bit(nodes[node], (x >> i) & 1));
      x = node - (1u << depth_);
    } else {
      x = io.c.get_tree(nodes, depth_);
    }
    if (x >= group) return Status::SymbolOutOfRange;
    mag = x + 1;
    v = static_cast<uint16_t>(base_ + (neg ? mag - 1 : m_.nneg + mag - 1));
    prev_mag = mag;
    prev_sign = neg ? 2 : 1;
    return Status::Ok;
  }

  // The codebook: each group (negatives, positives) holds strictly increasing bit
  // patterns, so after its first entry (float model) only the gaps are coded: the gap's
  // bit length down a 32-leaf tree, the two bits under its leading one in contexts per
  // length, the rest raw. Centroids are close to evenly spaced, so gaps are alike.
  template <class IO>
  Status codebook(IO& io, uint32_t* book) {
    FloatModel fm;
    Bit len_tree[32];
    Bit top[33][4];
    const uint32_t groups[2][2] = {{0, m_.nneg}, {m_.nneg, m_.npos}};
    for (const auto& g : groups) {
      for (uint32_t i = 0; i < g[1]; ++i) {
        uint32_t* e = book + g[0] + i;
        if (i == 0) {
          *e = fm.code(io, *e);
          continue;
        }
        uint32_t prev = e[-1];
        uint64_t gap = 0;
        if (IO::kEncoding) {
          if (*e <= prev) return Status::BadParams;  // writers sort each group
          gap = *e - prev;
        }
        int nb = 64 - __builtin_clzll(gap | 1);  // 1..32; gap >= 1 when encoding
        nb = 1 + static_cast<int>(FloatModel::tree(io, len_tree, 5, static_cast<uint32_t>(nb - 1)));
        uint64_t v = 1;
        int hi = nb - 1 < 2 ? nb - 1 : 2;
        uint32_t node = 1;
        for (int b = 0; b < hi; ++b) {
          int bit = io.bit(top[nb][node], static_cast<int>((gap >> (nb - 2 - b)) & 1));
          node = (node << 1) | static_cast<uint32_t>(bit);
          v = (v << 1) | static_cast<uint64_t>(bit);
        }
        int rest = nb - 1 - hi;
        if (rest > 0) v = (v << rest) | io.raw(static_cast<uint32_t>(gap & ((uint64_t{1} << rest) - 1)), rest);
        if (prev + v > 0xFFFFFFFFull) return Status::Corrupt;  // only a damaged stream gets here
        *e = static_cast<uint32_t>(prev + v);
      }
    }
    return Status::Ok;
  }

  WeightModel m_;
  int depth_;
  uint32_t groupmax_;
  uint32_t base_;
  uint64_t R_, C_;
  std::vector<Bit> tree_;
  std::vector<uint32_t> seen_;  // non-zeros so far per scan column
  std::vector<uint8_t> colctx_;  // see column_contexts()
  std::vector<uint8_t> mag_bucket_;  // bucket(mag), mag = 0..groupmax_
  std::vector<uint8_t> idx_bucket_;  // bucket(mag_of(v)), v = a table index
  std::vector<Bit> sig_;
  Bit row_bits_[2];
  size_t sig_per_;  // significance contexts without the period's bit
  Bit sign_[9];  // previous sign (none / + / -) x neighbour_sign()
};

struct EncIO : Enc {
  static constexpr bool kEncoding = true;
};
struct DecIO : Dec {
  static constexpr bool kEncoding = false;
};

Status finish_decode(const Decoder& d) {
  if (d.overrun()) return Status::Truncated;
  if (d.remaining()) return Status::TrailingBytes;
  if (d.bad()) return Status::Corrupt;
  return Status::Ok;
}

bool shift_ok(int s) { return s >= kMinShift && s <= kMaxShift; }

}  // namespace

Status check_model(const WeightModel& m) {
  uint64_t table = (m.sparse ? 1u : 0u) + uint64_t{m.nneg} + m.npos;
  if (table > 257 || (!m.sparse && table == 0) || m.codebook != m.nneg + m.npos) return Status::BadParams;
  if (m.value_ctx < 0 || m.value_ctx > 2 || m.sig_ctx < 0 || m.sig_ctx > 1 || !shift_ok(m.shift)) return Status::BadParams;
  if (m.rows == 0 || m.cols == 0 || m.rows > (uint64_t{1} << 40) / m.cols) return Status::BadParams;
  if (m.period && m.period >= (m.col_major ? m.rows : m.cols)) return Status::BadParams;
  return Status::Ok;
}

Status encode_weights(const uint16_t* idx, const uint32_t* book, const WeightModel& m, std::vector<uint8_t>& out) {
  Status st = check_model(m);
  if (st != Status::Ok) return st;
  out.clear();
  EncIO io{{Encoder(out, m.shift)}};
  WeightCoder wc(m);
  // The encoder's run() only reads idx and book; the casts let one template serve both.
  std::vector<uint32_t> b(book, book + m.codebook);
  st = wc.run(io, const_cast<uint16_t*>(idx), b.data());
  if (st != Status::Ok) return st;
  io.c.finish();
  return Status::Ok;
}

Status decode_weights(const uint8_t* in, size_t n, const WeightModel& m, uint16_t* idx, uint32_t* book) {
  Status st = check_model(m);
  if (st != Status::Ok) return st;
  DecIO io{{Decoder(in, n, m.shift)}};
  WeightCoder wc(m);
  st = wc.run(io, idx, book);
  if (st != Status::Ok) return st;
  return finish_decode(io.c);
}

Status encode_floats(const uint32_t* bits, size_t count, int shift, std::vector<uint8_t>& out) {
  if (!shift_ok(shift)) return Status::BadParams;
  out.clear();
  EncIO io{{Encoder(out, shift)}};
  FloatModel fm;
  for (size_t i = 0; i < count; ++i) fm.code(io, bits[i]);
  io.c.finish();
  return Status::Ok;
}

Status decode_floats(const uint8_t* in, size_t n, size_t count, int shift, uint32_t* bits) {
  if (!shift_ok(shift)) return Status::BadParams;
  DecIO io{{Decoder(in, n, shift)}};
  FloatModel fm;
  for (size_t i = 0; i < count; ++i) {
    bits[i] = fm.code(io, 0);
    if ((i & 4095) == 0 && io.c.overrun()) return Status::Truncated;
  }
  return finish_decode(io.c);
}

}  // namespace coder
}  // namespace deepcomp
