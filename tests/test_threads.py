"""Thread count setting, and identical results on 1 and 2 threads (fixed reduction order)."""
import os

import numpy as np
import pytest
import torch

from deepcomp import _C, ops
from deepcomp.errors import OpInputError


@pytest.fixture
def restore_threads():
    n, work = ops.get_num_threads(), _C.parallel_min_work()
    # Every call uses the whole team, so that the small sizes here really run on 2 threads.
    _C.set_parallel_min_work(0)
    yield
    ops.set_num_threads(n)
    _C.set_parallel_min_work(work)


def on_threads(n, fn):
    ops.set_num_threads(n)
    return fn()


def random_sparse(rows, cols, density, seed):
    """A packed 5-bit codebook weight and its CSR arrays (indptr, indices, codes, codebook)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(np.uint16)
    codes = rng.integers(0, 32, size=len(indices)).astype(np.uint8)
    codebook = rng.standard_normal(32).astype(np.float32)
    return ops.pack_codebook(indptr, indices, codes, codebook, rows, cols), (indptr, indices, codes, codebook)


def same_on_one_and_two_threads(x, w):
    assert torch.equal(on_threads(1, lambda: ops.spmm_packed(x, w)), on_threads(2, lambda: ops.spmm_packed(x, w)))


def test_set_and_get(restore_threads):
    ops.set_num_threads(1)
    assert ops.get_num_threads() == 1
    ops.set_num_threads(3)
    assert ops.get_num_threads() == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(OpInputError):
            ops.set_num_threads(bad)


@pytest.mark.parametrize("batch", [1, 16, 64])
def test_sparse_one_and_two_threads_identical(isa, restore_threads, batch):
    rows, cols = 1500, 2000
    w, (indptr, indices, codes, codebook) = random_sparse(rows, cols, 0.1, seed=batch)
    x = torch.randn(batch, cols)
    same_on_one_and_two_threads(x, w)
    wf = ops.pack_csr(indptr, indices, codebook[codes], rows, cols)
    same_on_one_and_two_threads(x, wf)


def test_sparse_batch1_wide_one_and_two_threads_identical(isa, restore_threads):
    # 20000 columns: batch 1 on zmm walks column blocks over chunks of rows that the
    # threads share out.
    w, _ = random_sparse(203, 20000, 0.05, seed=7)
    same_on_one_and_two_threads(torch.randn(1, 20000), w)


@pytest.mark.parametrize("batch", [1, 16, 37])
def test_int8_one_and_two_threads_identical(isa, restore_threads, batch):
    g = torch.Generator().manual_seed(batch)
    w = ops.pack_int8(torch.randn(515, 1030, generator=g))
    x = torch.randn(batch, 1030, generator=g)
    y1 = on_threads(1, lambda: ops.gemm_int8(x, w, relu=True))
    y2 = on_threads(2, lambda: ops.gemm_int8(x, w, relu=True))
    assert torch.equal(y1, y2)


def test_conv_one_and_two_threads_identical(restore_threads):
    x = torch.randn(4, 20, 16, 16)
    w = torch.randn(50, 20, 5, 5)
    packed = ops.pack_int8(w.reshape(50, -1))
    y1 = on_threads(1, lambda: ops.conv2d_int8(x, packed, 5, padding=2))
    y2 = on_threads(2, lambda: ops.conv2d_int8(x, packed, 5, padding=2))
    assert torch.equal(y1, y2)


def test_thread_setting_does_not_touch_torch(restore_threads):
    before = torch.get_num_threads()
    ops.set_num_threads(max(1, before + 1))
    assert torch.get_num_threads() == before


def test_column_blocked_sparse_one_and_two_threads_identical(isa, restore_threads):
    # Wide enough (17000 columns x 32 batch columns) for the column-blocked batch kernel.
    w, _ = random_sparse(300, 17000, 0.02, seed=3)
    same_on_one_and_two_threads(torch.randn(33, 17000), w)


@pytest.mark.parametrize("vnni", [False, True])
@pytest.mark.parametrize("batch", [5, 129])
def test_int8_ymm_passes_one_and_two_threads_identical(restore_threads, vnni, batch):
    """The ymm path with K cut into passes (batch 129 at K = 4100: three, partial sums kept
    per task between barriers) and with each thread prefetching the task it claimed next."""
    if not _C.cpu_has_avx2() or (vnni and not _C.int8_vnni_available()):
        pytest.skip("CPU without AVX2 / AVX-VNNI")
    g = torch.Generator().manual_seed(batch)
    w = ops.pack_int8(torch.randn(150, 4100, generator=g))
    x = torch.randn(batch, 4100, generator=g)
    before = _C.int8_vnni_enabled() or _C.int8_vnni512_enabled()
    try:
        _C.set_int8_vnni(vnni)
        _C.set_allow_avx512(False)
        y1 = on_threads(1, lambda: ops.gemm_int8(x, w, relu=True))
        y2 = on_threads(2, lambda: ops.gemm_int8(x, w, relu=True))
    finally:
        _C.set_int8_vnni(before)
        _C.set_allow_avx512(os.environ.get("DEEPCOMP_NO_AVX512", "0") in ("", "0"))
    assert torch.equal(y1, y2)


def _sparse_case(seed=3, rows=700, cols=900, batch=16):
    w, _ = random_sparse(rows, cols, 0.1, seed)
    return w, torch.randn(batch, cols, generator=torch.Generator().manual_seed(seed))


def test_concurrent_callers_get_their_own_results(restore_threads):
    # The kernels release the GIL: calls from several Python threads overlap, and a call
    # that finds the worker pool busy runs alone on its own thread. Every result must still
    # be exactly the one-thread result.
    import threading

    ops.set_num_threads(2)
    cases = [_sparse_case(seed) for seed in range(4)]
    expected = [on_threads(1, lambda c=c: ops.spmm_packed(c[1], c[0])) for c in cases]
    ops.set_num_threads(2)
    errors = []

    def worker(i):
        w, x = cases[i]
        for _ in range(30):
            if not torch.equal(ops.spmm_packed(x, w), expected[i]):
                errors.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_worker_threads_after_fork(restore_threads):
    # A forked child has none of the parent's worker threads; its 2-thread calls must still
    # complete, with the same results.
    ops.set_num_threads(2)
    w, x = _sparse_case()
    before = ops.spmm_packed(x, w)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # child: exit status says whether the result matched
        ok = False
        try:
            _C.set_parallel_min_work(0)
            ok = all(torch.equal(ops.spmm_packed(x, w), before) for _ in range(5))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
