#include "common/cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace deepcomp {

namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// -1: not yet decided; 0/1 afterwards.
std::atomic<int> g_force{-1};
std::atomic<int> g_allow_avx512{-1};

}  // namespace

bool cpu_has_avx2() {
#if defined(DEEPCOMP_HAVE_AVX2_TU) && (defined(__x86_64__) || defined(__i386__))
  // __builtin_cpu_supports checks CPUID and XGETBV (the OS saves YMM state).
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

Isa active_isa() {
  int f = g_force.load(std::memory_order_relaxed);
  if (f < 0) {
    f = env_flag("DEEPCOMP_FORCE_SCALAR") ? 1 : 0;
    g_force.store(f, std::memory_order_relaxed);
  }
  return (f == 0 && cpu_has_avx2()) ? Isa::Avx2 : Isa::Scalar;
}

void set_force_scalar(bool force) { g_force.store(force ? 1 : 0, std::memory_order_relaxed); }

bool avx512_usable(bool need_vnni) {
#if defined(DEEPCOMP_HAVE_AVX2_TU) && (defined(__x86_64__) || defined(__i386__))
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  static const bool has_vnni = has && __builtin_cpu_supports("avx512vnni");
  int allow = g_allow_avx512.load(std::memory_order_relaxed);
  if (allow < 0) {
    allow = env_flag("DEEPCOMP_NO_AVX512") ? 0 : 1;
    g_allow_avx512.store(allow, std::memory_order_relaxed);
  }
  return allow == 1 && active_isa() == Isa::Avx2 && (need_vnni ? has_vnni : has);
#else
  (void)need_vnni;
  return false;
#endif
}

void set_allow_avx512(bool allow) { g_allow_avx512.store(allow ? 1 : 0, std::memory_order_relaxed); }

}  // namespace deepcomp
