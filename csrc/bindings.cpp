// The only file that knows about Python. Each binding checks dtypes, shapes and
// contiguity once, then calls a plain C++ function over pointers and sizes with the
// GIL released. Kernels and the entropy coder never see a py:: type.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "coder/table_index.h"
#include "coder/weights.h"
#include "common/cpu.h"
#include "huffman/huffman.h"
#include "huffman/sparse_index.h"
#include "kernels/kernels.h"

namespace py = pybind11;
using namespace deepcomp;

namespace {

// ---- helpers shared by all sections ------------------------------------------------

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// Max-pool geometry for an h x w plane, output size as PyTorch computes it (ceil_mode's
// last window must start inside the input or its left padding); rejects what PyTorch
// rejects, so that every window overlaps the plane.
kernels::PoolGeom pool_geom(int64_t h, int64_t w, py::tuple p) {
  if (p.size() != 7) throw py::value_error("pool must be (kh, kw, sh, sw, ph, pw, ceil_mode)");
  kernels::PoolGeom g;
  g.h = h, g.w = w;
  g.kh = p[0].cast<int64_t>(), g.kw = p[1].cast<int64_t>(), g.sh = p[2].cast<int64_t>(), g.sw = p[3].cast<int64_t>();
  g.ph = p[4].cast<int64_t>(), g.pw = p[5].cast<int64_t>();
  const bool ceil = p[6].cast<bool>();
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0)
    throw py::value_error("pool kernel and stride must be >= 1, padding >= 0");
  if (2 * g.ph > g.kh || 2 * g.pw > g.kw) throw py::value_error("pool padding must be at most half the kernel size");
  auto size = [ceil](int64_t in, int64_t k, int64_t s, int64_t pad) {
    const int64_t span = in + 2 * pad - k + (ceil ? s - 1 : 0);
    if (span < 0) return int64_t{0};
    int64_t out = span / s + 1;
    if (ceil && (out - 1) * s >= in + pad) --out;
    return out;
  };
  g.oh = size(h, g.kh, g.sh, g.ph);
  g.ow = size(w, g.kw, g.sw, g.pw);
  if (g.oh < 1 || g.ow < 1) throw py::value_error("the pool window is larger than the padded input");
  return g;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "deepcomp native kernels and entropy coder (see deepcomp/_C.pyi)";

  // ---- CPU dispatch -----------------------------------------------------------------
  m.def("cpu_has_avx2", &cpu_has_avx2, "True when the CPU supports AVX2+FMA and the build has the AVX2 code.");
  m.def("active_isa", [] { return active_isa() == Isa::Avx2 ? "avx2" : "scalar"; },
        "The kernel path in use: 'avx2' or 'scalar'.");
  m.def("set_force_scalar", &set_force_scalar, py::arg("force"),
        "Force (or stop forcing) the scalar path; DEEPCOMP_FORCE_SCALAR=1 does the same at start-up.");
  m.def("avx512_usable", [] { return avx512_usable(false); },
        "True when the AVX2 path is active and will use its zmm variants (CPU has AVX-512).");
  m.def("set_allow_avx512", &set_allow_avx512, py::arg("allow"),
        "Allow (default) or forbid the zmm variants; DEEPCOMP_NO_AVX512=1 forbids them at start-up.");

  // ---- Huffman coder (section owned by the codec work) -------------------------------
  m.attr("HUFFMAN_MAX_CODE_LEN") = huffman::kMaxCodeLen;
  m.attr("HUFFMAN_MAX_ALPHABET") = huffman::kMaxAlphabet;
  m.def(
      "huffman_code_lengths",
      [](carray<uint64_t> freqs, int max_len) {
        if (freqs.ndim() != 1) throw py::value_error("freqs must be 1-D");
        size_t n = static_cast<size_t>(freqs.shape(0));
        carray<uint8_t> out(static_cast<py::ssize_t>(n));
        huffman::Status st;
        {
          py::gil_scoped_release nogil;
          st = huffman::code_lengths(freqs.data(), n, max_len, out.mutable_data());
        }
        if (st != huffman::Status::Ok) throw py::value_error(huffman::status_message(st));
        return out;
      },
      py::arg("freqs"), py::arg("max_len") = huffman::kMaxCodeLen,
      "Length-limited optimal code lengths (package-merge) from uint64 symbol frequencies.");
  m.def(
      "huffman_encode",
      [](carray<uint16_t> symbols, carray<uint8_t> lengths) {
        if (symbols.ndim() != 1 || lengths.ndim() != 1) throw py::value_error("symbols and lengths must be 1-D");
        size_t count = static_cast<size_t>(symbols.shape(0));
        size_t alphabet = static_cast<size_t>(lengths.shape(0));
        std::string out(huffman::encoded_bound(count), '\0');
        size_t nbytes = 0;
        uint64_t nbits = 0;
        huffman::Status st;
        {
          py::gil_scoped_release nogil;
          st = huffman::encode(symbols.data(), count, lengths.data(), alphabet,
                               reinterpret_cast<uint8_t*>(&out[0]), out.size(), &nbytes, &nbits);
        }
        if (st != huffman::Status::Ok) throw py::value_error(huffman::status_message(st));
        out.resize(nbytes);
        return py::make_tuple(py::bytes(out), nbits);
      },
      py::arg("symbols"), py::arg("lengths"),
      "Canonical Huffman encode (MSB first); returns (payload bytes, exact bit count).");
  m.def(
      "huffman_decode",
      [](carray<uint8_t> payload, carray<uint8_t> lengths, size_t count) {
        if (payload.ndim() != 1 || lengths.ndim() != 1) throw py::value_error("payload and lengths must be 1-D");
        size_t nbytes = static_cast<size_t>(payload.shape(0));
        size_t alphabet = static_cast<size_t>(lengths.shape(0));
        // The output is sized from `count`, so bound it by the payload before allocating.
        if (count > nbytes * 8) throw py::value_error(huffman::status_message(huffman::Status::CountTooLarge));
        carray<uint16_t> out(static_cast<py::ssize_t>(count));
        huffman::Status st;
        {
          py::gil_scoped_release nogil;
          st = huffman::decode(payload.data(), nbytes, lengths.data(), alphabet, out.mutable_data(), count);
        }
        if (st != huffman::Status::Ok) throw py::value_error(huffman::status_message(st));
        return out;
      },
      py::arg("payload"), py::arg("lengths"), py::arg("count"),
      "Decode exactly `count` symbols; ValueError on a malformed table or stream.");
  m.def(
      "huffman_decode_pair",
      [](carray<uint8_t> payload_a, carray<uint8_t> lengths_a, carray<uint8_t> payload_b,
         carray<uint8_t> lengths_b, size_t count) {
        if (payload_a.ndim() != 1 || lengths_a.ndim() != 1 || payload_b.ndim() != 1 || lengths_b.ndim() != 1)
          throw py::value_error("payloads and lengths must be 1-D");
        size_t na = static_cast<size_t>(payload_a.shape(0)), nb = static_cast<size_t>(payload_b.shape(0));
        if (count > na * 8 || count > nb * 8)
          throw py::value_error(huffman::status_message(huffman::Status::CountTooLarge));
        carray<uint16_t> out_a(static_cast<py::ssize_t>(count));
        carray<uint16_t> out_b(static_cast<py::ssize_t>(count));
        huffman::Status st;
        {
          py::gil_scoped_release nogil;
          st = huffman::decode_pair(payload_a.data(), na, lengths_a.data(), static_cast<size_t>(lengths_a.shape(0)),
                                    out_a.mutable_data(), payload_b.data(), nb, lengths_b.data(),
                                    static_cast<size_t>(lengths_b.shape(0)), out_b.mutable_data(), count);
        }
        if (st != huffman::Status::Ok) throw py::value_error(huffman::status_message(st));
        return py::make_tuple(out_a, out_b);
      },
      py::arg("payload_a"), py::arg("lengths_a"), py::arg("payload_b"), py::arg("lengths_b"), py::arg("count"),
      "Decode two equally long streams in one interleaved pass; ValueError if either is malformed.");
  // shared_sparse relative-index walks: check, expand to (positions, codes), or densify.
  auto sparse_args = [](const carray<uint16_t>& rel, const carray<uint16_t>& codes, size_t nnz) {
    if (rel.ndim() != 1 || codes.ndim() != 1 || rel.shape(0) != codes.shape(0))
      throw py::value_error("rel and codes must be 1-D and of equal length");
    // Outputs sized by nnz may not exceed the entries that back them.
    if (nnz > static_cast<size_t>(rel.shape(0)))
      throw py::value_error(sparse_index::status_message(sparse_index::Status::NnzMismatch));
    return static_cast<size_t>(rel.shape(0));
  };
  m.def(
      "sparse_check",
      [sparse_args](carray<uint16_t> rel, carray<uint16_t> codes, int index_bits, uint32_t filler_code,
                    uint64_t numel, size_t nnz) {
        size_t entries = sparse_args(rel, codes, nnz);
        sparse_index::Status st;
        {
          py::gil_scoped_release nogil;
          st = sparse_index::check(rel.data(), codes.data(), entries, index_bits, filler_code, numel, nnz);
        }
        if (st != sparse_index::Status::Ok) throw py::value_error(sparse_index::status_message(st));
      },
      py::arg("rel"), py::arg("codes"), py::arg("index_bits"), py::arg("filler_code"), py::arg("numel"),
      py::arg("nnz"), "Check shared_sparse streams (positions, fillers, nnz); ValueError if malformed.");
  m.def(
      "sparse_expand",
      [sparse_args](carray<uint16_t> rel, carray<uint16_t> codes, int index_bits, uint32_t filler_code,
                    uint64_t numel, size_t nnz) {
        size_t entries = sparse_args(rel, codes, nnz);
        carray<int64_t> pos(static_cast<py::ssize_t>(nnz));
        carray<uint8_t> out(static_cast<py::ssize_t>(nnz));
        sparse_index::Status st;
        {
          py::gil_scoped_release nogil;
          st = sparse_index::expand(rel.data(), codes.data(), entries, index_bits, filler_code, numel, nnz,
                                    pos.mutable_data(), out.mutable_data());
        }
        if (st != sparse_index::Status::Ok) throw py::value_error(sparse_index::status_message(st));
        return py::make_tuple(pos, out);
      },
      py::arg("rel"), py::arg("codes"), py::arg("index_bits"), py::arg("filler_code"), py::arg("numel"),
      py::arg("nnz"), "shared_sparse streams -> (flat positions int64[nnz], codes uint8[nnz]).");
  m.def(
      "sparse_dense",
      [sparse_args](carray<uint16_t> rel, carray<uint16_t> codes, int index_bits, carray<float> codebook,
                    uint64_t numel, size_t nnz) {
        size_t entries = sparse_args(rel, codes, nnz);
        if (codebook.ndim() != 1) throw py::value_error("codebook must be 1-D");
        uint32_t k = static_cast<uint32_t>(codebook.shape(0));
        // numpy.zeros takes calloc'd pages, already zero, so the kernel skips its own clear.
        carray<float> out = py::module_::import("numpy").attr("zeros")(numel, "float32");
        sparse_index::Status st;
        {
          py::gil_scoped_release nogil;
          st = sparse_index::dense(rel.data(), codes.data(), entries, index_bits, k, numel, nnz,
                                   reinterpret_cast<const uint32_t*>(codebook.data()),
                                   reinterpret_cast<uint32_t*>(out.mutable_data()), true);
        }
        if (st != sparse_index::Status::Ok) throw py::value_error(sparse_index::status_message(st));
        return out;
      },
      py::arg("rel"), py::arg("codes"), py::arg("index_bits"), py::arg("codebook"), py::arg("numel"),
      py::arg("nnz"), "shared_sparse streams -> dense float32[numel] (codebook values as bit patterns).");

  m.def(
      "huffman_sparse_dense",
      [](carray<uint8_t> rel_payload, carray<uint8_t> rel_lengths, carray<uint8_t> code_payload,
         carray<uint8_t> code_lengths, size_t entries, int index_bits, carray<float> codebook, uint64_t numel,
         size_t nnz) {
        if (rel_payload.ndim() != 1 || rel_lengths.ndim() != 1 || code_payload.ndim() != 1 ||
            code_lengths.ndim() != 1 || codebook.ndim() != 1)
          throw py::value_error("payloads, lengths and codebook must be 1-D");
        if (index_bits < 2 || index_bits > 8)
          throw py::value_error(sparse_index::status_message(sparse_index::Status::BadIndexBits));
        uint32_t k = static_cast<uint32_t>(codebook.shape(0));
        if (rel_lengths.shape(0) != (py::ssize_t{1} << index_bits) ||
            code_lengths.shape(0) != static_cast<py::ssize_t>(k) + 1)
          throw py::value_error("code tables do not match the index width and codebook size");
        if (nnz > entries) throw py::value_error(sparse_index::status_message(sparse_index::Status::NnzMismatch));
        // numpy.zeros takes calloc'd pages, already zero, so the kernel skips its own clear.
        carray<float> out = py::module_::import("numpy").attr("zeros")(numel, "float32");
        sparse_index::Status st;
        huffman::Status hs;
        {
          py::gil_scoped_release nogil;
          st = sparse_index::huffman_dense(
              rel_payload.data(), static_cast<size_t>(rel_payload.shape(0)), rel_lengths.data(), code_payload.data(),
              static_cast<size_t>(code_payload.shape(0)), code_lengths.data(), entries, index_bits, k, numel, nnz,
              reinterpret_cast<const uint32_t*>(codebook.data()), reinterpret_cast<uint32_t*>(out.mutable_data()),
              true, &hs);
        }
        if (st == sparse_index::Status::Stream) throw py::value_error(huffman::status_message(hs));
        if (st != sparse_index::Status::Ok) throw py::value_error(sparse_index::status_message(st));
        return out;
      },
      py::arg("rel_payload"), py::arg("rel_lengths"), py::arg("code_payload"), py::arg("code_lengths"),
      py::arg("entries"), py::arg("index_bits"), py::arg("codebook"), py::arg("numel"), py::arg("nnz"),
      "shared_sparse Huffman streams -> dense float32[numel] in one pass (huffman_decode_pair + sparse_dense "
      "without the intermediate arrays); ValueError if anything is malformed.");
  m.def(
      "huffman_decode_map",
      [](carray<uint8_t> payload, carray<uint8_t> lengths, size_t count, carray<float> table) {
        if (payload.ndim() != 1 || lengths.ndim() != 1 || table.ndim() != 1)
          throw py::value_error("payload, lengths and table must be 1-D");
        size_t nbytes = static_cast<size_t>(payload.shape(0));
        if (lengths.shape(0) != table.shape(0)) throw py::value_error("code table and value table differ in size");
        if (count > nbytes * 8) throw py::value_error(huffman::status_message(huffman::Status::CountTooLarge));
        carray<float> out(static_cast<py::ssize_t>(count));
        huffman::Status st;
        {
          py::gil_scoped_release nogil;
          st = huffman::decode_map(payload.data(), nbytes, lengths.data(), static_cast<size_t>(lengths.shape(0)),
                                   reinterpret_cast<const uint32_t*>(table.data()),
                                   reinterpret_cast<uint32_t*>(out.mutable_data()), count);
        }
        if (st != huffman::Status::Ok) throw py::value_error(huffman::status_message(st));
        return out;
      },
      py::arg("payload"), py::arg("lengths"), py::arg("count"), py::arg("table"),
      "Decode `count` symbols straight into float32 values: out[i] = table[symbol i] (bit patterns).");

  // ---- arithmetic coder (csrc/coder; use deepcomp.codec.arith) --------------------------
  auto weight_model = [](uint64_t rows, uint64_t cols, uint32_t nneg, uint32_t npos, bool sparse, bool col_major,
                         int value_ctx, int sig_ctx, int shift, uint32_t period) {
    coder::WeightModel m;
    m.period = period;
    m.sig_ctx = sig_ctx;
    m.rows = rows;
    m.cols = cols;
    m.nneg = nneg;
    m.npos = npos;
    m.sparse = sparse;
    m.col_major = col_major;
    m.value_ctx = value_ctx;
    m.shift = shift;
    m.codebook = nneg + npos;
    coder::Status st = coder::check_model(m);
    if (st != coder::Status::Ok) throw py::value_error(coder::status_message(st));
    return m;
  };
  m.attr("AC_MIN_SHIFT") = coder::kMinShift;
  m.attr("AC_MAX_SHIFT") = coder::kMaxShift;
  m.def(
      "ac_encode_weights",
      [weight_model](carray<uint16_t> idx, carray<uint32_t> book, uint64_t rows, uint64_t cols, uint32_t nneg,
                     uint32_t npos, bool sparse, bool col_major, int value_ctx, int sig_ctx, int shift,
                     uint32_t period) {
        coder::WeightModel m =
            weight_model(rows, cols, nneg, npos, sparse, col_major, value_ctx, sig_ctx, shift, period);
        if (idx.ndim() != 1 || static_cast<uint64_t>(idx.shape(0)) != rows * cols)
          throw py::value_error("idx must be 1-D with rows * cols entries");
        if (book.ndim() != 1 || static_cast<uint32_t>(book.shape(0)) != m.codebook)
          throw py::value_error("book must be 1-D with nneg + npos entries");
        std::vector<uint8_t> out;
        coder::Status st;
        {
          py::gil_scoped_release nogil;
          st = coder::encode_weights(idx.data(), book.data(), m, out);
        }
        if (st != coder::Status::Ok) throw py::value_error(coder::status_message(st));
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("idx"), py::arg("book"), py::arg("rows"), py::arg("cols"), py::arg("nneg"), py::arg("npos"),
      py::arg("sparse"), py::arg("col_major"), py::arg("value_ctx"), py::arg("sig_ctx"), py::arg("shift"),
      py::arg("period") = 0, "Shared weights (table indices, row-major matrix view) and codebook bit patterns -> payload bytes.");
  m.def(
      "ac_decode_weights",
      [weight_model](carray<uint8_t> payload, uint64_t rows, uint64_t cols, uint32_t nneg, uint32_t npos, bool sparse,
                     bool col_major, int value_ctx, int sig_ctx, int shift, uint32_t period) {
        coder::WeightModel m =
            weight_model(rows, cols, nneg, npos, sparse, col_major, value_ctx, sig_ctx, shift, period);
        if (payload.ndim() != 1) throw py::value_error("payload must be 1-D");
        carray<uint16_t> idx(static_cast<py::ssize_t>(rows * cols));
        carray<uint32_t> book(static_cast<py::ssize_t>(m.codebook));
        coder::Status st;
        {
          py::gil_scoped_release nogil;
          st = coder::decode_weights(payload.data(), static_cast<size_t>(payload.shape(0)), m, idx.mutable_data(),
                                     book.mutable_data());
        }
        if (st != coder::Status::Ok) throw py::value_error(coder::status_message(st));
        return py::make_tuple(idx, book);
      },
      py::arg("payload"), py::arg("rows"), py::arg("cols"), py::arg("nneg"), py::arg("npos"), py::arg("sparse"),
      py::arg("col_major"), py::arg("value_ctx"), py::arg("sig_ctx"), py::arg("shift"), py::arg("period") = 0,
      "Payload -> (table indices uint16[rows*cols], codebook bit patterns uint32[nneg+npos]).");
  m.def(
      "ac_encode_floats",
      [](carray<uint32_t> bits, int shift) {
        if (bits.ndim() != 1) throw py::value_error("bits must be 1-D");
        std::vector<uint8_t> out;
        coder::Status st;
        {
          py::gil_scoped_release nogil;
          st = coder::encode_floats(bits.data(), static_cast<size_t>(bits.shape(0)), shift, out);
        }
        if (st != coder::Status::Ok) throw py::value_error(coder::status_message(st));
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("bits"), py::arg("shift"), "float32 bit patterns -> payload bytes (lossless).");
  m.def(
      "table_index",
      [](carray<uint32_t> values, carray<uint32_t> table) {
        if (values.ndim() != 1 || table.ndim() != 1) throw py::value_error("values and table must be 1-D");
        if (table.shape(0) == 0) throw py::value_error("table must not be empty");
        carray<int64_t> out(values.shape(0));
        {
          py::gil_scoped_release nogil;
          coder::table_index(values.data(), static_cast<size_t>(values.shape(0)), table.data(),
                             static_cast<size_t>(table.shape(0)), out.mutable_data());
        }
        return out;
      },
      py::arg("values"), py::arg("table"),
      "np.searchsorted(table, values) for a sorted uint32 table (int64 positions), branch-free.");
  m.def(
      "ac_decode_floats",
      [](carray<uint8_t> payload, uint64_t count, int shift) {
        if (payload.ndim() != 1) throw py::value_error("payload must be 1-D");
        carray<uint32_t> out(static_cast<py::ssize_t>(count));
        coder::Status st;
        {
          py::gil_scoped_release nogil;
          st = coder::decode_floats(payload.data(), static_cast<size_t>(payload.shape(0)), count, shift,
                                    out.mutable_data());
        }
        if (st != coder::Status::Ok) throw py::value_error(coder::status_message(st));
        return out;
      },
      py::arg("payload"), py::arg("count"), py::arg("shift"), "Payload -> float32 bit patterns uint32[count].");

  // ---- kernels (section owned by the kernels work) -----------------------------------
  // Arrays arrive exactly typed and C-contiguous (noconvert: a silent copy would hide a
  // slow path, and outputs must be the caller's own buffers). deepcomp/ops.py checks
  // the contents (index ranges, codes < K) once, through check_csr, before any call.
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("number of threads must be >= 1");
    kernels::set_num_threads(n);
  }, py::arg("n"), "Threads the kernels may use (their own setting, not OpenMP's global one).");
  m.def("get_num_threads", &kernels::get_num_threads);
  m.def("set_parallel_min_work", &kernels::set_parallel_min_work, py::arg("work"),
        "Work below which a call stays on one thread; 0 makes every call use the team (tests).");
  m.def("parallel_min_work", &kernels::parallel_min_work);
  m.def(
      "check_csr",
      [](carray<int32_t> indptr, py::array indices, int64_t n_in, py::object codes, int64_t k) {
        if (indptr.ndim() != 1 || indices.ndim() != 1) throw py::value_error("indptr and indices must be 1-D");
        const bool i16 = indices.dtype().is(py::dtype::of<uint16_t>());
        if (!i16 && !indices.dtype().is(py::dtype::of<int32_t>())) throw py::value_error("indices must be uint16 or int32");
        if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices must be contiguous");
        const uint8_t* cp = nullptr;
        carray<uint8_t> c;
        if (!codes.is_none()) {
          c = codes.cast<carray<uint8_t>>();
          if (c.ndim() != 1 || c.shape(0) != indices.shape(0)) throw py::value_error("codes must be 1-D, one per index");
          cp = c.data();
        }
        std::string err;
        {
          py::gil_scoped_release nogil;
          err = kernels::check_csr(indptr.data(), indptr.shape(0) - 1,
                                   i16 ? static_cast<const uint16_t*>(indices.data()) : nullptr,
                                   i16 ? nullptr : static_cast<const int32_t*>(indices.data()),
                                   indices.shape(0), n_in, cp, static_cast<int32_t>(k));
        }
        return err;
      },
      py::arg("indptr").noconvert(), py::arg("indices"), py::arg("n_in"), py::arg("codes").none(true), py::arg("k"),
      "'' when the CSR arrays are safe for spmm, else what is wrong.");
  m.def(
      "spmm",
      [](carray<float> x, carray<int32_t> indptr, py::array indices, py::object values, py::object codes,
         py::object codebook, py::object bias, bool relu, carray<float> out, py::object seg) {
        kernels::SparseArgs a;
        if (x.ndim() != 2 || out.ndim() != 2 || indptr.ndim() != 1 || indices.ndim() != 1)
          throw py::value_error("x and out must be 2-D, indptr and indices 1-D");
        a.batch = x.shape(0);
        a.n_in = x.shape(1);
        a.n_out = indptr.shape(0) - 1;
        if (a.n_out < 0 || out.shape(0) != a.batch || out.shape(1) != a.n_out)
          throw py::value_error("out must be [batch, rows]");
        if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices must be contiguous");
        if (indices.dtype().is(py::dtype::of<uint16_t>())) a.idx16 = static_cast<const uint16_t*>(indices.data());
        else if (indices.dtype().is(py::dtype::of<int32_t>())) a.idx32 = static_cast<const int32_t*>(indices.data());
        else throw py::value_error("indices must be uint16 or int32");
        if (a.idx16 && a.n_in > 65536) throw py::value_error("uint16 indices need in_features <= 65536");
        const int64_t nnz = indices.shape(0);
        if (indptr.data()[0] != 0 || indptr.data()[a.n_out] != nnz) throw py::value_error("indptr must run from 0 to nnz");
        carray<float> vals, cb, bs;
        carray<uint8_t> cds;
        if (!values.is_none()) {
          vals = values.cast<carray<float>>();
          if (vals.ndim() != 1 || vals.shape(0) != nnz) throw py::value_error("values must be 1-D, one per index");
          a.values = vals.data();
        } else {
          cds = codes.cast<carray<uint8_t>>();
          cb = codebook.cast<carray<float>>();
          if (cds.ndim() != 1 || cds.shape(0) != nnz) throw py::value_error("codes must be 1-D, one per index");
          if (cb.ndim() != 1 || cb.shape(0) < 1 || cb.shape(0) > 256) throw py::value_error("codebook must have 1..256 entries");
          a.codes = cds.data();
          a.codebook = cb.data();
          a.k = static_cast<int32_t>(cb.shape(0));
        }
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.n_out) throw py::value_error("bias must have one entry per row");
          a.bias = bs.data();
        }
        carray<int32_t> sg;
        // Checked only when the kernel will read it: then it is a few tenths of a % of the
        // product, and it keeps a stale or hand-made table from sending the kernel outside
        // a row.
        if (!seg.is_none() && kernels::spmm_reads_blocks(a.batch, a.n_in)) {
          sg = seg.cast<carray<int32_t>>();
          const int64_t nb = kernels::seg_blocks(a.n_in, kernels::kSegCols);
          if (sg.ndim() != 1 || sg.shape(0) != (nb + 1) * (a.n_out + 1) ||
              !kernels::check_block_starts(indptr.data(), a.n_out, nb, sg.data()))
            throw py::value_error("column block table does not match the sparse weight");
          a.seg = sg.data();
          a.seg_cols = kernels::kSegCols;
        }
        a.x = x.data();
        a.indptr = indptr.data();
        a.relu = relu;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::spmm(a);
      },
      py::arg("x").noconvert(), py::arg("indptr").noconvert(), py::arg("indices"), py::arg("values").none(true), py::arg("codes").none(true),
      py::arg("codebook").none(true), py::arg("bias").none(true), py::arg("relu"), py::arg("out").noconvert(),
      py::arg("seg").none(true) = py::none(),
      "out = x @ W.T (+ bias) (+ relu), W in CSR with fp32 values or codebook codes. Contents must have passed check_csr.");
  m.attr("SPMM_SEG_COLS") = kernels::kSegCols;
  m.def("spmm_reads_blocks", &kernels::spmm_reads_blocks, py::arg("batch"), py::arg("n_in"),
        "True when spmm on the active path reads (and so checks) the column block table for this batch and width.");
  m.def(
      "csr_block_starts",
      [](carray<int32_t> indptr, py::array indices, int64_t n_in) {
        const int64_t rows = indptr.shape(0) - 1;
        const bool i16 = indices.dtype().is(py::dtype::of<uint16_t>());
        if (!i16 && !indices.dtype().is(py::dtype::of<int32_t>())) throw py::value_error("indices must be uint16 or int32");
        if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices must be contiguous");
        if (rows < 0 || n_in < 1) throw py::value_error("bad shape");
        const int64_t nb = kernels::seg_blocks(n_in, kernels::kSegCols);
        carray<int32_t> out(static_cast<py::ssize_t>((nb + 1) * (rows + 1)));
        kernels::csr_block_starts(indptr.data(), rows, i16 ? static_cast<const uint16_t*>(indices.data()) : nullptr,
                                  i16 ? nullptr : static_cast<const int32_t*>(indices.data()), n_in, kernels::kSegCols,
                                  out.mutable_data());
        return out;
      },
      py::arg("indptr").noconvert(), py::arg("indices"), py::arg("n_in"),
      "Column block table for spmm (indices sorted within rows; contents must have passed check_csr).");
  m.def("int8_vnni_available", &kernels::int8_vnni_available, "True when the CPU has AVX-VNNI (and AVX2).");
  m.def("int8_vnni_enabled", &kernels::int8_vnni_enabled, "Whether the int8 GEMM uses AVX-VNNI (ymm) now.");
  m.def("int8_vnni512_enabled", &kernels::int8_vnni512_enabled,
        "Whether the int8 kernels use AVX512-VNNI (zmm) now.");
  m.def("set_int8_vnni", &kernels::set_int8_vnni, py::arg("enabled"),
        "Use (or stop using) VNNI in the int8 kernels; DEEPCOMP_NO_VNNI=1 disables it at start-up.");
  m.def(
      "int8_pack",
      [](carray<int8_t> q) {
        if (q.ndim() != 2) throw py::value_error("q must be 2-D [out, in]");
        const int64_t n = q.shape(0), k = q.shape(1);
        carray<int8_t> out(static_cast<py::ssize_t>(kernels::int8_packed_size(n, k)));
        kernels::int8_pack(q.data(), n, k, out.mutable_data());
        return out;
      },
      py::arg("q").noconvert(), "Reorder int8 weights [out, in] into the GEMM's packed layout.");
  m.def(
      "gemm_int8",
      [](carray<float> x, carray<int8_t> packed, carray<int32_t> row_sums, carray<float> w_scale, py::object bias,
         bool relu, carray<float> out) {
        if (x.ndim() != 2 || out.ndim() != 2) throw py::value_error("x and out must be 2-D");
        kernels::Int8Args a;
        a.batch = x.shape(0);
        a.k = x.shape(1);
        a.n = w_scale.shape(0);
        if (a.k > kernels::kInt8MaxK) throw py::value_error("in_features too large for exact int32 accumulation");
        if (packed.ndim() != 1 || packed.shape(0) != kernels::int8_packed_size(a.n, a.k))
          throw py::value_error("packed weights do not match in_features / out_features");
        if (row_sums.ndim() != 1 || row_sums.shape(0) != a.n || w_scale.ndim() != 1)
          throw py::value_error("row_sums and w_scale must have one entry per output");
        if (out.shape(0) != a.batch || out.shape(1) != a.n) throw py::value_error("out must be [batch, out_features]");
        carray<float> bs;
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.n) throw py::value_error("bias must have one entry per output");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.packed = packed.data();
        a.row_sums = row_sums.data();
        a.w_scale = w_scale.data();
        a.relu = relu;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::gemm_int8(a);
      },
      py::arg("x").noconvert(), py::arg("packed").noconvert(), py::arg("row_sums").noconvert(),
      py::arg("w_scale").noconvert(), py::arg("bias").none(true), py::arg("relu"), py::arg("out").noconvert(),
      "out = dequant(quant7(x) @ q.T) (+ bias) (+ relu), exact int32 accumulation.");
  m.def(
      "im2col",
      [](carray<float> x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, carray<float> out) {
        if (x.ndim() != 4 || out.ndim() != 2) throw py::value_error("x must be NCHW, out 2-D");
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) throw py::value_error("bad kernel/stride/padding");
        const int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
        const int64_t oh = (h + 2 * ph - kh) / sh + 1, ow = (w + 2 * pw - kw) / sw + 1;
        if (h + 2 * ph < kh || w + 2 * pw < kw) throw py::value_error("kernel larger than the padded input");
        if (out.shape(0) != n * oh * ow || out.shape(1) != c * kh * kw) throw py::value_error("out must be [n*oh*ow, c*kh*kw]");
        const float* xp = x.data();
        float* op = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::im2col(xp, n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, op);
      },
      py::arg("x").noconvert(), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
      py::arg("out").noconvert(), "Patches of an NCHW tensor, one row per output pixel.");
  m.def(
      "lut_gemm",
      [](carray<float> x, carray<uint8_t> codes, carray<float> codebook, py::object bias, bool relu,
         carray<float> out) {
        if (x.ndim() != 2 || codes.ndim() != 2 || out.ndim() != 2 || codebook.ndim() != 1)
          throw py::value_error("x, codes and out must be 2-D, codebook 1-D");
        kernels::LutArgs a;
        a.batch = x.shape(0);
        a.k = x.shape(1);
        a.n = codes.shape(0);
        if (codes.shape(1) != a.k) throw py::value_error("codes must be [out_features, in_features]");
        if (codebook.shape(0) < 1 || codebook.shape(0) > 256) throw py::value_error("codebook must have 1..256 entries");
        if (out.shape(0) != a.batch || out.shape(1) != a.n) throw py::value_error("out must be [batch, out_features]");
        carray<float> bs;
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.n) throw py::value_error("bias must have one entry per output");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.codes = codes.data();
        a.codebook = codebook.data();
        a.ncb = static_cast<int32_t>(codebook.shape(0));
        a.relu = relu;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::lut_gemm(a);
      },
      py::arg("x").noconvert(), py::arg("codes").noconvert(), py::arg("codebook").noconvert(),
      py::arg("bias").none(true), py::arg("relu"), py::arg("out").noconvert(),
      "out = x @ codebook[codes].T (+ bias) (+ relu), codes uint8 [out, in]; a code past the codebook reads an entry or 0, never other memory.");
  m.def("set_lut_vbmi", &kernels::set_lut_vbmi, py::arg("allow"),
        "Let lut_gemm's zmm path decode codebooks over 64 entries with AVX512-VBMI (default) or not (tests).");
  m.def(
      "lut_decode",
      [](carray<uint8_t> codes, carray<float> codebook, carray<float> out) {
        if (codes.ndim() != 2 || out.ndim() != 2 || codebook.ndim() != 1)
          throw py::value_error("codes and out must be 2-D, codebook 1-D");
        if (codebook.shape(0) < 1 || codebook.shape(0) > 256) throw py::value_error("codebook must have 1..256 entries");
        if (out.shape(0) != codes.shape(0) || out.shape(1) != codes.shape(1)) throw py::value_error("out must be shaped like codes");
        kernels::LutArgs a;
        a.n = codes.shape(0);
        a.k = codes.shape(1);
        a.codes = codes.data();
        a.codebook = codebook.data();
        a.ncb = static_cast<int32_t>(codebook.shape(0));
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::lut_decode(a);
      },
      py::arg("codes").noconvert(), py::arg("codebook").noconvert(), py::arg("out").noconvert(),
      "out = codebook[codes] (fp32, [out, in]); a code past the codebook reads an entry or 0.");


  // ---- int8 direct convolution (section owned by the conv8 work) --------------------
  m.def(
      "conv_int8_pack",
      [](carray<int8_t> q) {
        if (q.ndim() != 4) throw py::value_error("q must be 4-D [out, in, kh, kw]");
        const int64_t o = q.shape(0), c = q.shape(1), kh = q.shape(2), kw = q.shape(3);
        carray<int8_t> out(static_cast<py::ssize_t>(kernels::conv_int8_packed_size(o, c, kh, kw)));
        kernels::conv_int8_pack(q.data(), o, c, kh, kw, out.mutable_data());
        return out;
      },
      py::arg("q").noconvert(), "Reorder int8 conv weights [out, in, kh, kw] into conv_int8's packed layout.");
  m.def(
      "conv_int8",
      [](carray<float> x, carray<int8_t> packed, carray<int32_t> row_sums, carray<float> w_scale, int64_t kh,
         int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, py::object bias, bool relu, carray<float> out) {
        if (x.ndim() != 4 || out.ndim() != 4) throw py::value_error("x and out must be 4-D (NCHW)");
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) throw py::value_error("bad kernel/stride/padding");
        kernels::ConvInt8Args a;
        a.n = x.shape(0);
        a.c = x.shape(1);
        a.h = x.shape(2);
        a.w = x.shape(3);
        a.o = w_scale.shape(0);
        a.kh = kh, a.kw = kw, a.sh = sh, a.sw = sw, a.ph = ph, a.pw = pw;
        if (a.h + 2 * ph < kh || a.w + 2 * pw < kw) throw py::value_error("kernel larger than the padded input");
        a.oh = (a.h + 2 * ph - kh) / sh + 1;
        a.ow = (a.w + 2 * pw - kw) / sw + 1;
        if (a.c * kh * kw > kernels::kInt8MaxK) throw py::value_error("in_channels * kh * kw too large for exact int32 accumulation");
        if (w_scale.ndim() != 1 || packed.ndim() != 1 ||
            packed.shape(0) != kernels::conv_int8_packed_size(a.o, a.c, kh, kw))
          throw py::value_error("packed weights do not match the input channels / kernel size");
        if (row_sums.ndim() != 1 || row_sums.shape(0) != a.o) throw py::value_error("row_sums must have one entry per output channel");
        if (out.shape(0) != a.n || out.shape(1) != a.o || out.shape(2) != a.oh || out.shape(3) != a.ow)
          throw py::value_error("out must be [n, out_channels, oh, ow]");
        carray<float> bs;
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.o) throw py::value_error("bias must have one entry per output channel");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.packed = packed.data();
        a.row_sums = row_sums.data();
        a.w_scale = w_scale.data();
        a.relu = relu;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::conv_int8(a);
      },
      py::arg("x").noconvert(), py::arg("packed").noconvert(), py::arg("row_sums").noconvert(),
      py::arg("w_scale").noconvert(), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
      py::arg("pw"), py::arg("bias").none(true), py::arg("relu"), py::arg("out").noconvert(),
      "NCHW int8 direct convolution (groups 1): quant7 per image, exact int32 sums, fp32 NCHW out.");

  // ---- depthwise and sparse 1x1 convolution (section owned by the conv-sparse work) ---
  m.def(
      "depthwise_conv2d",
      [](carray<float> x, carray<float> weight, py::object bias, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
         int32_t act, carray<float> out) {
        if (x.ndim() != 4 || weight.ndim() != 3 || out.ndim() != 4)
          throw py::value_error("x and out must be NCHW, weight [channels, kh, kw]");
        kernels::DepthwiseArgs a;
        a.n = x.shape(0);
        a.c = x.shape(1);
        a.h = x.shape(2);
        a.w = x.shape(3);
        a.kh = weight.shape(1);
        a.kw = weight.shape(2);
        if (weight.shape(0) != a.c) throw py::value_error("weight must have one filter per channel");
        if (a.kh < 1 || a.kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || act < 0 || act > kernels::kActHardswish)
          throw py::value_error("bad kernel/stride/padding/activation");
        // Padding beyond the kernel only adds outputs that see nothing but zeros; bounded so
        // that the padded plane's size cannot overflow.
        if (ph >= a.kh || pw >= a.kw) throw py::value_error("padding must be smaller than the kernel");
        if (a.h + 2 * ph < a.kh || a.w + 2 * pw < a.kw) throw py::value_error("kernel larger than the padded input");
        a.sh = sh;
        a.sw = sw;
        a.ph = ph;
        a.pw = pw;
        a.oh = (a.h + 2 * ph - a.kh) / sh + 1;
        a.ow = (a.w + 2 * pw - a.kw) / sw + 1;
        if (out.shape(0) != a.n || out.shape(1) != a.c || out.shape(2) != a.oh || out.shape(3) != a.ow)
          throw py::value_error("out must be [n, channels, oh, ow]");
        carray<float> bs;
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.c) throw py::value_error("bias must have one entry per channel");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.weight = weight.data();
        a.act = act;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::depthwise_conv2d(a);
      },
      py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("bias").none(true), py::arg("sh"),
      py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("act"), py::arg("out").noconvert(),
      "Depthwise conv2d (one filter per channel, dilation 1) with bias and activation (0 none, 1 relu, 2 relu6, 3 hardswish).");
  m.def(
      "conv1x1_sparse",
      [](carray<float> x, carray<int32_t> indptr, py::array indices, py::object values, py::object codes,
         py::object codebook, py::object bias, int32_t act, carray<float> out) {
        if (x.ndim() != 4 || out.ndim() != 4 || indptr.ndim() != 1 || indices.ndim() != 1)
          throw py::value_error("x and out must be NCHW, indptr and indices 1-D");
        if (act < 0 || act > kernels::kActHardswish) throw py::value_error("bad activation");
        kernels::Conv1x1Args a;
        a.n = x.shape(0);
        a.c_in = x.shape(1);
        a.hw = x.shape(2) * x.shape(3);
        a.c_out = indptr.shape(0) - 1;
        if (a.c_out < 0 || out.shape(0) != a.n || out.shape(1) != a.c_out || out.shape(2) != x.shape(2) ||
            out.shape(3) != x.shape(3))
          throw py::value_error("out must be [n, rows, h, w]");
        if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices must be contiguous");
        if (indices.dtype().is(py::dtype::of<uint16_t>())) a.idx16 = static_cast<const uint16_t*>(indices.data());
        else if (indices.dtype().is(py::dtype::of<int32_t>())) a.idx32 = static_cast<const int32_t*>(indices.data());
        else throw py::value_error("indices must be uint16 or int32");
        const int64_t nnz = indices.shape(0);
        if (indptr.data()[0] != 0 || indptr.data()[a.c_out] != nnz) throw py::value_error("indptr must run from 0 to nnz");
        carray<float> vals, cb, bs;
        carray<uint8_t> cds;
        if (!values.is_none()) {
          vals = values.cast<carray<float>>();
          if (vals.ndim() != 1 || vals.shape(0) != nnz) throw py::value_error("values must be 1-D, one per index");
          a.values = vals.data();
        } else {
          cds = codes.cast<carray<uint8_t>>();
          cb = codebook.cast<carray<float>>();
          if (cds.ndim() != 1 || cds.shape(0) != nnz) throw py::value_error("codes must be 1-D, one per index");
          if (cb.ndim() != 1 || cb.shape(0) < 1 || cb.shape(0) > 256) throw py::value_error("codebook must have 1..256 entries");
          a.codes = cds.data();
          a.codebook = cb.data();
          a.k = static_cast<int32_t>(cb.shape(0));
        }
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.c_out) throw py::value_error("bias must have one entry per row");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.indptr = indptr.data();
        a.act = act;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::conv1x1_sparse(a);
      },
      py::arg("x").noconvert(), py::arg("indptr").noconvert(), py::arg("indices"), py::arg("values").none(true),
      py::arg("codes").none(true), py::arg("codebook").none(true), py::arg("bias").none(true), py::arg("act"),
      py::arg("out").noconvert(),
      "1x1 conv as SpMM over channels: out[i] = W @ x[i] (+ bias) (+ act), W [rows, C] in CSR. Contents must have passed check_csr.");

  // ---- direct sparse KxK convolution (section owned by the compact-policy work) -------
  m.def(
      "conv_sparse_kxk",
      [](carray<float> x, carray<int32_t> indptr, py::array indices, py::object values, py::object codes,
         py::object codebook, int64_t n_cols, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
         int64_t pw, py::object bias, int32_t act, carray<float> out, py::object pool) {
        if (x.ndim() != 4 || out.ndim() != 4 || indptr.ndim() != 1 || indices.ndim() != 1)
          throw py::value_error("x and out must be NCHW, indptr and indices 1-D");
        if (act < 0 || act > kernels::kActHardswish) throw py::value_error("bad activation");
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0)
          throw py::value_error("need kernel and stride >= 1 and padding >= 0");
        kernels::ConvSparseArgs a;
        a.n = x.shape(0);
        a.c = x.shape(1);
        a.h = x.shape(2);
        a.w = x.shape(3);
        a.kh = kh, a.kw = kw, a.sh = sh, a.sw = sw, a.ph = ph, a.pw = pw;
        if (a.c * kh * kw != n_cols) throw py::value_error("x's channels * kh * kw must equal the weight's columns");
        if (a.h + 2 * ph < kh || a.w + 2 * pw < kw) throw py::value_error("the kernel is larger than the padded input");
        a.oh = (a.h + 2 * ph - kh) / sh + 1;
        a.ow = (a.w + 2 * pw - kw) / sw + 1;
        a.c_out = indptr.shape(0) - 1;
        kernels::PoolGeom pg;
        if (!pool.is_none()) {  // max-pool fused after the activation: out is the pooled size
          pg = pool_geom(a.oh, a.ow, pool.cast<py::tuple>());
          a.pool = &pg;
        }
        const int64_t yh = a.pool ? pg.oh : a.oh, yw = a.pool ? pg.ow : a.ow;
        if (a.c_out < 0 || out.shape(0) != a.n || out.shape(1) != a.c_out || out.shape(2) != yh ||
            out.shape(3) != yw)
          throw py::value_error(a.pool ? "out must be [n, rows, pooled oh, pooled ow]" : "out must be [n, rows, oh, ow]");
        if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices must be contiguous");
        if (indices.dtype().is(py::dtype::of<uint16_t>())) a.idx16 = static_cast<const uint16_t*>(indices.data());
        else if (indices.dtype().is(py::dtype::of<int32_t>())) a.idx32 = static_cast<const int32_t*>(indices.data());
        else throw py::value_error("indices must be uint16 or int32");
        const int64_t nnz = indices.shape(0);
        if (indptr.data()[0] != 0 || indptr.data()[a.c_out] != nnz) throw py::value_error("indptr must run from 0 to nnz");
        carray<float> vals, cb, bs;
        carray<uint8_t> cds;
        if (!values.is_none()) {
          vals = values.cast<carray<float>>();
          if (vals.ndim() != 1 || vals.shape(0) != nnz) throw py::value_error("values must be 1-D, one per index");
          a.values = vals.data();
        } else {
          cds = codes.cast<carray<uint8_t>>();
          cb = codebook.cast<carray<float>>();
          if (cds.ndim() != 1 || cds.shape(0) != nnz) throw py::value_error("codes must be 1-D, one per index");
          if (cb.ndim() != 1 || cb.shape(0) < 1 || cb.shape(0) > 256) throw py::value_error("codebook must have 1..256 entries");
          a.codes = cds.data();
          a.codebook = cb.data();
          a.k = static_cast<int32_t>(cb.shape(0));
        }
        if (!bias.is_none()) {
          bs = bias.cast<carray<float>>();
          if (bs.ndim() != 1 || bs.shape(0) != a.c_out) throw py::value_error("bias must have one entry per row");
          a.bias = bs.data();
        }
        a.x = x.data();
        a.indptr = indptr.data();
        a.act = act;
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::conv_sparse_kxk(a);
      },
      py::arg("x").noconvert(), py::arg("indptr").noconvert(), py::arg("indices"), py::arg("values").none(true),
      py::arg("codes").none(true), py::arg("codebook").none(true), py::arg("n_cols"), py::arg("kh"), py::arg("kw"),
      py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("bias").none(true), py::arg("act"),
      py::arg("out").noconvert(), py::arg("pool").none(true) = py::none(),
      "Direct sparse KxK conv on NCHW (no im2col): W [rows, C*kh*kw] in CSR. Contents must have passed check_csr. "
      "pool=(kh, kw, sh, sw, ph, pw, ceil_mode): max-pool each output plane after the activation.");

  // ---- max-pool 2-D (section owned by the per-op overhead work) ----------------------
  m.def(
      "max_pool2d",
      [](carray<float> x, py::tuple pool, carray<float> out) {
        if (x.ndim() != 4 || out.ndim() != 4) throw py::value_error("x and out must be NCHW");
        kernels::MaxPoolArgs a;
        a.g = pool_geom(x.shape(2), x.shape(3), pool);
        if (out.shape(0) != x.shape(0) || out.shape(1) != x.shape(1) || out.shape(2) != a.g.oh ||
            out.shape(3) != a.g.ow)
          throw py::value_error("out must be [n, c, oh, ow] of the pool's output size");
        a.planes = x.shape(0) * x.shape(1);
        a.x = x.data();
        a.y = out.mutable_data();
        py::gil_scoped_release nogil;
        kernels::max_pool2d(a);
      },
      py::arg("x").noconvert(), py::arg("pool"), py::arg("out").noconvert(),
      "Max-pool over NCHW planes, dilation 1: pool=(kh, kw, sh, sw, ph, pw, ceil_mode) as PyTorch's.");
}
