// libFuzzer target for the C++ Huffman decoder (not part of the module build).
//
// Build and run with clang (libFuzzer ships with it):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc
//       csrc/fuzz/fuzz_huffman_decode.cpp csrc/huffman/huffman.cpp csrc/huffman/sparse_index.cpp
//       -o build/fuzz_huffman_decode
//   (one command line; split here for width)
//   mkdir -p build/fuzz_corpus && build/fuzz_huffman_decode -max_total_time=60 build/fuzz_corpus
// Without clang, a standalone driver runs the same target on seeded random inputs:
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all
//       -DDEEPCOMP_FUZZ_STANDALONE -Icsrc csrc/fuzz/fuzz_huffman_decode.cpp csrc/huffman/huffman.cpp
//       csrc/huffman/sparse_index.cpp -o build/fuzz_huffman_standalone
//   build/fuzz_huffman_standalone 200000
//
// Input layout: [u8 alphabet-1][u16 count][alphabet/2 bytes of 4-bit lengths][payload].
// Three properties are checked: decoding arbitrary bytes never reads or writes out of
// bounds (the sanitizers watch), whatever decodes re-encodes to the same bytes, and the
// fused sparse decode (sparse_index::huffman_dense) accepts and writes exactly what
// decode_pair followed by sparse_index::dense does, the payload read as both streams.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "huffman/huffman.h"
#include "huffman/sparse_index.h"

using namespace deepcomp::huffman;
namespace sx = deepcomp::sparse_index;

static long g_fused_ok = 0;  // fused decodes that succeeded and matched (the driver reports it)

namespace {

// The payload as the relative-index stream and the code stream of one shared_sparse
// tensor (alphabet 2^b = filler code + 1): fused and two-pass decodes must agree.
void check_fused(const std::vector<uint8_t>& in, const uint8_t* lengths, size_t alphabet, size_t count,
                 uint8_t salt) {
  int b = 0;
  while ((size_t{1} << b) < alphabet) ++b;
  if ((size_t{1} << b) != alphabet || b < 2 || b > 8 || count == 0) return;
  const uint32_t filler = static_cast<uint32_t>(alphabet - 1);
  // Long enough for any walk, or (one time in four) likely too short.
  const uint64_t numel = count * alphabet / (salt % 4 ? 1 : 3) + salt % 5;
  std::vector<uint32_t> book(filler);
  for (uint32_t i = 0; i < filler; ++i) book[i] = 0x3f800000u + i;
  const uint8_t* p = in.empty() ? nullptr : in.data();
  std::vector<uint16_t> rel(count), codes(count);
  Status pst = decode_pair(p, in.size(), lengths, alphabet, rel.data(), p, in.size(), lengths, alphabet,
                           codes.data(), count);
  size_t nnz = 0;
  if (pst == Status::Ok)
    for (size_t j = 0; j < count; ++j) nnz += codes[j] != filler;
  if (salt % 16 == 8) nnz = nnz ? nnz - 1 : 1;  // a wrong count now and then
  std::vector<uint32_t> two(numel, 0), one(numel, 0);
  sx::Status st2 = pst == Status::Ok
                       ? sx::dense(rel.data(), codes.data(), count, b, filler, numel, nnz, book.data(), two.data(), true)
                       : sx::Status::Stream;
  Status hs = Status::Ok;
  sx::Status st1 = sx::huffman_dense(p, in.size(), lengths, p, in.size(), lengths, count, b, filler, numel, nnz,
                                     book.data(), one.data(), true, &hs);
  if ((st1 == sx::Status::Ok) != (st2 == sx::Status::Ok)) std::abort();
  if (st1 == sx::Status::Ok && one != two) std::abort();
  g_fused_ok += st1 == sx::Status::Ok;
}

// true when the input decoded (and re-encoded to the same bytes).
bool run_one(const uint8_t* data, size_t size) {
  if (size < 3) return false;
  size_t alphabet = static_cast<size_t>(data[0]) + 1;
  size_t count = static_cast<size_t>(data[1]) | static_cast<size_t>(data[2]) << 8;
  size_t pos = 3;
  size_t tbytes = (alphabet + 1) / 2;
  if (size - pos < tbytes) return false;
  std::vector<uint8_t> lengths(alphabet);
  for (size_t s = 0; s < alphabet; ++s) {
    uint8_t b = data[pos + s / 2];
    lengths[s] = (s % 2) ? (b & 15) : (b >> 4);
  }
  pos += tbytes;
  const uint8_t* payload = data + pos;
  size_t nbytes = size - pos;
  // Exact-size heap copies so that ASan sees any read past the end.
  std::vector<uint8_t> in(payload, payload + nbytes);
  std::vector<uint16_t> out(count);
  Status st = decode(nbytes ? in.data() : nullptr, nbytes, lengths.data(), alphabet,
                     count ? out.data() : nullptr, count);
  // The interleaved pair decoder must agree with two single decodes of the same input.
  std::vector<uint16_t> pa(count), pb(count);
  Status pst = decode_pair(nbytes ? in.data() : nullptr, nbytes, lengths.data(), alphabet,
                           count ? pa.data() : nullptr, nbytes ? in.data() : nullptr, nbytes,
                           lengths.data(), alphabet, count ? pb.data() : nullptr, count);
  if ((pst == Status::Ok) != (st == Status::Ok)) std::abort();
  check_fused(in, lengths.data(), alphabet, count, data[1]);
  if (st != Status::Ok) return false;
  if (pa != out || pb != out) std::abort();
  std::vector<uint8_t> again(encoded_bound(count));
  size_t obytes = 0;
  uint64_t obits = 0;
  st = encode(out.data(), count, lengths.data(), alphabet, again.data(), again.size(), &obytes, &obits);
  if (st != Status::Ok || obytes != nbytes || (nbytes && std::memcmp(again.data(), in.data(), nbytes) != 0))
    std::abort();
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
  long iters = argc > 1 ? std::atol(argv[1]) : 100000;
  std::mt19937_64 rng(12345);
  long decoded = 0;
  for (long i = 0; i < iters; ++i) {
    // Half the inputs carry a valid table from code_lengths, so decoding gets deep.
    // Powers of two often: those inputs also feed the fused sparse decode.
    size_t alphabet = rng() % 4 ? 2 + rng() % 255 : size_t{1} << (2 + rng() % 7);
    std::vector<uint64_t> freqs(alphabet);
    for (auto& f : freqs) f = rng() % 4 ? rng() % 1000 : 0;
    freqs[0] += 1;
    freqs[1] += 1;
    std::vector<uint8_t> lengths(alphabet);
    code_lengths(freqs.data(), alphabet, kMaxCodeLen, lengths.data());
    std::vector<uint8_t> input = {static_cast<uint8_t>(alphabet - 1), 0, 0};
    // Now and then a stream long enough for the multi-symbol table.
    size_t count = rng() % 8 ? rng() % 400 : Decoder::kMultiMinCount - 8 + rng() % 3000;
    input[1] = count & 255;
    input[2] = count >> 8;
    for (size_t s = 0; s < alphabet; s += 2) {
      uint8_t hi = lengths[s], lo = s + 1 < alphabet ? lengths[s + 1] : 0;
      uint8_t b = static_cast<uint8_t>(hi << 4 | lo);
      if (rng() % 8 == 0) b = static_cast<uint8_t>(rng());
      input.push_back(b);
    }
    if (rng() % 4 == 0) {
      // A real stream for these lengths, so the re-encode check runs too.
      std::vector<uint16_t> sym;
      for (size_t j = 0; j < count; ++j) {
        uint16_t s = static_cast<uint16_t>(rng() % alphabet);
        while (lengths[s] == 0) s = static_cast<uint16_t>((s + 1) % alphabet);
        sym.push_back(s);
      }
      std::vector<uint8_t> enc(encoded_bound(count));
      size_t nb = 0;
      uint64_t nbits = 0;
      encode(sym.data(), count, lengths.data(), alphabet, enc.data(), enc.size(), &nb, &nbits);
      input.insert(input.end(), enc.begin(), enc.begin() + nb);
      if (nb && rng() % 2) input[input.size() - 1 - rng() % nb] ^= static_cast<uint8_t>(1u << (rng() % 8));
    } else {
      size_t plen = rng() % 300;
      for (size_t j = 0; j < plen; ++j) input.push_back(static_cast<uint8_t>(rng()));
    }
    if (rng() % 16 == 0) input.resize(rng() % input.size());
    std::vector<uint8_t> exact(input);
    decoded += run_one(exact.data(), exact.size());
  }
  std::printf("ran %ld inputs without a fault; %ld decoded and re-encoded identically; %ld fused sparse decodes "
              "matched the two-pass one\n", iters, decoded, g_fused_ok);
  return 0;
}
#endif
