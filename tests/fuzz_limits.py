"""The memory limit handed to a libFuzzer (atheris) child process.

Linux starts a child's peak RSS (getrusage's ru_maxrss, which libFuzzer's -rss_limit_mb
reads) at its parent's peak: after the memory-heavy tests of a full run, the pytest
process's own high-water mark made the codec fuzzer report "out-of-memory" on its first
input. So the limit is the headroom on top of this process's peak.
"""
import resource


def rss_limit_mb(headroom_mb: int) -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + headroom_mb
