// The kernels' own thread count. Kept apart from omp_set_num_threads so that a torch
// loaded in the same process (possibly on the same OpenMP runtime) is unaffected.
#include <omp.h>

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

#include "kernels/kernels.h"

namespace deepcomp {
namespace kernels {

namespace {
std::atomic<int> g_threads{0};  // 0: not set yet, use OpenMP's default

// Below this much work (in units of about 0.3 ns of one thread's time: a sparse
// nonzero at batch 1, 32 int8 multiply-adds) a parallel region costs more than the
// second thread saves. Measured on the 2-vCPU VM with passive waiting: waking and joining
// the team costs 0.1-0.2 ms there, so 1000x4096 at 90% (0.4 M units) ran slower on two
// threads and 4096x4096 (1.9 M units) faster.
std::atomic<double> g_min_work{1.5e6};
}  // namespace

void set_parallel_min_work(double work) { g_min_work.store(work < 0 ? 0 : work, std::memory_order_relaxed); }
double parallel_min_work() { return g_min_work.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = omp_get_max_threads();
    if (n < 1) n = 1;
  }
  return n;
}

int threads_for(double work) { return work < parallel_min_work() ? 1 : get_num_threads(); }

namespace {

// A job for parallel_chunks: chunks [0, n) handed out from `next`.
struct Job {
  void (*fn)(void*, int64_t);
  void* ctx;
  int64_t n;
  int max_helpers;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> helpers{0};
};

// The kernels' worker threads. OpenMP's team would do, but its closing barrier makes the
// caller wait for every worker to wake up and arrive, even one that wakes after all the
// work is done; on the 2-vCPU VM a sleeping thread takes 50-250 us to wake (passive
// waiting, measured), so a 4096x9216 product at batch 16 lost a fifth of its two-thread
// speed-up there. Here a job is finished when its chunks are: a late worker finds nothing
// left and goes back to sleep, and no thread ever waits for another one to wake up.
// Idle workers sleep on a condition variable (no spinning while idle).
class Pool {
 public:
  // Runs the job on the calling thread and up to job.max_helpers workers.
  void run(Job& job) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread's job is running: do this one alone
      work(job);
      return;
    }
    grow(job.max_helpers);
    {
      std::lock_guard<std::mutex> g(mutex_);
      job_.store(&job, std::memory_order_seq_cst);
      ++seq_;
    }
    cv_.notify_all();
    work(job);
    wait_until([&] { return job.done.load(std::memory_order_acquire) >= job.n; });
    // Withdraw the job, then wait for workers that may still hold it (they only check
    // that nothing is left: their chunks are done).
    job_.store(nullptr, std::memory_order_seq_cst);
    wait_until([&] { return holders_.load(std::memory_order_seq_cst) == 0; });
  }

  // After fork() only the calling thread exists: forget the workers.
  void reset_after_fork() {
    new (&mutex_) std::mutex();
    new (&run_mutex_) std::mutex();
    new (&cv_) std::condition_variable();
    nworkers_ = 0;
    seq_ = 0;
    job_.store(nullptr);
    holders_.store(0);
  }

 private:
  static void work(Job& job) {
    for (int64_t c = job.next.fetch_add(1, std::memory_order_relaxed); c < job.n;
         c = job.next.fetch_add(1, std::memory_order_relaxed)) {
      job.fn(job.ctx, c);
      job.done.fetch_add(1, std::memory_order_release);
    }
  }

  // Spins briefly, then yields: the thread it waits for may need this CPU.
  template <typename Pred>
  static void wait_until(Pred done) {
    for (int spins = 0; !done(); ++spins) {
      if (spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        sched_yield();
      }
    }
  }

  void grow(int want) {
    while (nworkers_ < want) {
      std::thread(&Pool::worker_loop, this).detach();
      ++nworkers_;
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> g(mutex_);
        cv_.wait(g, [&] { return seq_ != seen; });
        seen = seq_;
      }
      // Announce this thread before looking at the job, so that run() cannot return (and
      // free the job) between the two.
      holders_.fetch_add(1, std::memory_order_seq_cst);
      Job* job = job_.load(std::memory_order_seq_cst);
      if (job && job->helpers.fetch_add(1, std::memory_order_relaxed) < job->max_helpers) work(*job);
      holders_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;      // guards seq_ for the sleeping workers
  std::condition_variable cv_;
  uint64_t seq_ = 0;
  int nworkers_ = 0;  // touched only under run_mutex_
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> holders_{0};
};

// Never destroyed: detached workers may still be waiting on it while the process exits.
Pool& pool() {
  static Pool* p = [] {
    Pool* q = new Pool();
    pthread_atfork(nullptr, nullptr, [] { pool().reset_after_fork(); });
    return q;
  }();
  return *p;
}

}  // namespace

void parallel_chunks(int nthreads, int64_t n, void (*fn)(void*, int64_t), void* ctx) {
  if (nthreads <= 1 || n <= 1) {
    for (int64_t c = 0; c < n; ++c) fn(ctx, c);
    return;
  }
  Job job;
  job.fn = fn;
  job.ctx = ctx;
  job.n = n;
  job.max_helpers = static_cast<int>(nthreads - 1 < n - 1 ? nthreads - 1 : n - 1);
  pool().run(job);
}

}  // namespace kernels
}  // namespace deepcomp
