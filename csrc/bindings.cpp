// The only file that knows about Python. Each binding checks dtypes, shapes and
// contiguity once, then calls a plain C++ function over pointers and sizes with the
// GIL released. Kernels and the entropy coder never see a py:: type.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/cpu.h"

namespace py = pybind11;
using namespace deepcomp;

namespace {

// ---- helpers shared by all sections ------------------------------------------------

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "deepcomp native kernels and entropy coder (see deepcomp/_C.pyi)";

  // ---- CPU dispatch -----------------------------------------------------------------
  m.def("cpu_has_avx2", &cpu_has_avx2, "True when the CPU supports AVX2+FMA and the build has the AVX2 code.");
  m.def("active_isa", [] { return active_isa() == Isa::Avx2 ? "avx2" : "scalar"; },
        "The kernel path in use: 'avx2' or 'scalar'.");
  m.def("set_force_scalar", &set_force_scalar, py::arg("force"),
        "Force (or stop forcing) the scalar path; DEEPCOMP_FORCE_SCALAR=1 does the same at start-up.");

  // ---- Huffman coder (section owned by the codec work) -------------------------------

  // ---- kernels (section owned by the kernels work) -----------------------------------
}
