// libFuzzer target for the arithmetic decoders (csrc/coder; not part of the module build).
//
// Build and run with clang (libFuzzer ships with it):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc
//       csrc/fuzz/fuzz_ac_decode.cpp csrc/coder/weights.cpp -o build/fuzz_ac_decode
//   mkdir -p build/fuzz_ac_corpus && build/fuzz_ac_decode -max_total_time=60 build/fuzz_ac_corpus
// Without clang, a standalone driver runs the same target on seeded inputs (half of them
// real streams, then bit-flipped, truncated or extended):
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all
//       -DDEEPCOMP_FUZZ_STANDALONE -Icsrc csrc/fuzz/fuzz_ac_decode.cpp csrc/coder/weights.cpp -o build/fuzz_ac_standalone
//   build/fuzz_ac_standalone 20000
//
// Input layout: [u8 rows][u8 cols][u8 nneg][u8 npos][u8 flags][u8 period][payload]; flags
// bit 0 sparse, bit 1 column-major, bits 2-3 value context (3 -> 0), bit 4 significance
// context, bits 5-7 shift offset; period: 0 when its low 2 bits are 0, else (p >> 2) + 1
// (models whose period is not below the scan row length are skipped). Properties: decoding arbitrary bytes never reads or writes out of
// bounds and always terminates (the sanitizers and the element count bound it), every
// decoded index lies inside the table, and whatever decodes re-encodes to a stream that
// decodes to the same indices and codebook.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "coder/weights.h"

using namespace deepcomp::coder;

namespace {

constexpr size_t kHead = 6;

bool model_from(const uint8_t* d, WeightModel& m) {
  m.rows = static_cast<uint64_t>(d[0] % 64) + 1;
  m.cols = static_cast<uint64_t>(d[1] % 64) + 1;
  m.nneg = d[2] % 129;
  m.npos = d[3] % 129;
  m.sparse = d[4] & 1;
  m.col_major = (d[4] >> 1) & 1;
  m.value_ctx = ((d[4] >> 2) & 3) % 3;
  m.sig_ctx = (d[4] >> 4) & 1;
  m.shift = kMinShift + ((d[4] >> 5) % (kMaxShift - kMinShift + 1));
  m.codebook = m.nneg + m.npos;
  m.period = (d[5] & 3) ? (d[5] >> 2) + 1u : 0u;
  return check_model(m) == Status::Ok;
}

bool run_one(const uint8_t* data, size_t size) {
  if (size < kHead) return false;
  WeightModel m;
  if (!model_from(data, m)) return false;
  std::vector<uint8_t> in(data + kHead, data + size);  // exact-size heap copy for ASan
  size_t numel = static_cast<size_t>(m.rows * m.cols);
  std::vector<uint16_t> idx(numel);
  std::vector<uint32_t> book(m.codebook + 1);
  Status st = decode_weights(in.empty() ? nullptr : in.data(), in.size(), m, idx.data(), book.data());
  // Floats: same bytes, a count derived from the header.
  std::vector<uint32_t> fl(numel);
  decode_floats(in.empty() ? nullptr : in.data(), in.size(), numel, m.shift, fl.data());
  if (st != Status::Ok) return false;
  uint32_t table = (m.sparse ? 1u : 0u) + m.nneg + m.npos;
  for (uint16_t v : idx)
    if (v >= table) std::abort();
  std::vector<uint8_t> again;
  if (encode_weights(idx.data(), book.data(), m, again) != Status::Ok) std::abort();
  std::vector<uint16_t> idx2(numel);
  std::vector<uint32_t> book2(m.codebook + 1);
  if (decode_weights(again.data(), again.size(), m, idx2.data(), book2.data()) != Status::Ok) std::abort();
  if (idx2 != idx || std::memcmp(book.data(), book2.data(), m.codebook * 4) != 0) std::abort();
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run_one(data, size);
  return 0;
}

#ifdef DEEPCOMP_FUZZ_STANDALONE
#include <cstdio>
#include <random>

int main(int argc, char** argv) {
  long iters = argc > 1 ? std::atol(argv[1]) : 20000;
  std::mt19937_64 rng(4321);
  long decoded = 0;
  for (long i = 0; i < iters; ++i) {
    uint8_t head[kHead];
    for (auto& h : head) h = static_cast<uint8_t>(rng());
    head[0] %= 24;
    head[1] %= 24;
    head[5] %= 48;  // periods up to 12, so that many fit the rows
    WeightModel m;
    std::vector<uint8_t> input(head, head + kHead);
    if (model_from(head, m) && rng() % 2) {
      // a real stream for this model, so decoding gets deep, then damaged or not
      uint32_t table = (m.sparse ? 1u : 0u) + m.nneg + m.npos;
      std::vector<uint16_t> idx(m.rows * m.cols);
      int density = static_cast<int>(rng() % 101);
      uint32_t base = m.sparse ? 1 : 0, nvals = table - base;  // check_model: dense has nvals >= 1
      for (auto& v : idx)
        v = nvals == 0 || (m.sparse && static_cast<int>(rng() % 100) >= density)
                ? 0 : static_cast<uint16_t>(base + rng() % nvals);
      std::vector<uint32_t> book(m.codebook + 1);
      // each group strictly increasing, as writers store it
      uint32_t at = 0;
      for (uint32_t g = 0; g < 2; ++g) {
        uint32_t n = g ? m.npos : m.nneg;
        uint32_t v = static_cast<uint32_t>(rng() % 0x40000000u);
        for (uint32_t j = 0; j < n; ++j, ++at) {
          book[at] = v;
          v += 1 + static_cast<uint32_t>(rng() % (rng() % 2 ? 0x1000000u : 64u));
        }
      }
      std::vector<uint8_t> enc;
      if (encode_weights(idx.data(), book.data(), m, enc) != Status::Ok) std::abort();
      input.insert(input.end(), enc.begin(), enc.end());
      switch (rng() % 4) {
        case 0: break;
        case 1: if (enc.size()) input[kHead + rng() % enc.size()] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 2: input.resize(kHead + rng() % (enc.size() + 1)); break;
        default: input.push_back(static_cast<uint8_t>(rng()));
      }
    } else {
      size_t plen = rng() % 200;
      for (size_t j = 0; j < plen; ++j) input.push_back(static_cast<uint8_t>(rng()));
    }
    decoded += run_one(input.data(), input.size());
  }
  std::printf("ran %ld inputs without a fault; %ld decoded and re-encoded consistently\n", iters, decoded);
  return 0;
}
#endif
