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

// Some AVX2 kernels have a wider zmm variant inside the same *_avx2.cpp file (functions
// with a target attribute). It runs only when the AVX2 path is active, the CPU has
// AVX-512 F/BW/VL (and VNNI where `need_vnni`), and DEEPCOMP_NO_AVX512=1 is not set;
// set_allow_avx512(false) turns it off in-process so tests can compare both widths.
bool avx512_usable(bool need_vnni);
void set_allow_avx512(bool allow);

}  // namespace deepcomp
