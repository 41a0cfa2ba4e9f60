// Run-time choice between the AVX2 kernels and their scalar twins.
#pragma once

namespace deepcomp {

enum class Isa { Scalar = 0, Avx2 = 1 };

// True when the CPU (and OS) support AVX2 and FMA and this build contains the AVX2 code.
bool cpu_has_avx2();

// The path kernels take: AVX2 when available, unless DEEPCOMP_FORCE_SCALAR=1 is set
// in the environment (read once) or set_force_scalar(true) was called.
Isa active_isa();

// Lets tests flip the path inside one process without re-reading the environment.
void set_force_scalar(bool force);

}  // namespace deepcomp
