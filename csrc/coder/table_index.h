// Positions of values in a sorted table (np.searchsorted, side "left"), for the
// writer's per-element codebook lookups. NumPy's search branches on every comparison;
// with random codebook entries that mispredicts about half the time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deepcomp {
namespace coder {

// out[i] = the number of table entries < values[i]; table sorted ascending, k >= 1.
void table_index(const uint32_t* values, size_t n, const uint32_t* table, size_t k, int64_t* out);

}  // namespace coder
}  // namespace deepcomp
