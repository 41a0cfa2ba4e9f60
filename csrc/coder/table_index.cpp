#include "coder/table_index.h"

namespace deepcomp {
namespace coder {

void table_index(const uint32_t* values, size_t n, const uint32_t* table, size_t k, int64_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t x = values[i];
    // Branch-free lower bound: the halving steps are the same for every value, and the
    // step is arithmetic rather than a select (which the compiler turns back into a
    // branch), so independent elements overlap.
    const uint32_t* base = table;
    size_t len = k;
    while (len > 1) {
      size_t half = len / 2;
      base += static_cast<size_t>(base[half - 1] < x) * half;
      len -= half;
    }
    out[i] = static_cast<int64_t>(base - table) + (*base < x);
  }
}

}  // namespace coder
}  // namespace deepcomp
