"""Sparse matmul (codebook and fp32 CSR): against torch, scalar against AVX2, and input checks."""
import numpy as np
import pytest
import torch

from deepcomp import _C, ops
from deepcomp.errors import OpInputError
from isa_paths import scalar_and_avx2

# Different summation orders (per-lane partial sums, FMA) move results by a few ulps per
# term; bound the error by a multiple of the sum of |terms|.
REL_TOL = 2e-6


def make_sparse(rows, cols, density, k=32, seed=0, empty_rows=True):
    """A random codebook CSR matrix: (dense W, indptr, indices, codes, codebook)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < density
    if empty_rows and rows > 2:
        mask[rng.choice(rows, size=max(1, rows // 5), replace=False)] = False
    codebook = rng.standard_normal(k).astype(np.float32)
    codes_full = rng.integers(0, k, size=(rows, cols)).astype(np.uint8)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(np.uint16 if cols <= 65536 else np.int32)
    codes = codes_full[mask]
    dense = np.where(mask, codebook[codes_full], 0).astype(np.float32)
    return torch.from_numpy(dense), indptr, indices, codes, codebook


def bound(x, w):
    return REL_TOL * float((x.abs() @ w.abs().T).max()) * max(1.0, w.shape[1] ** 0.5) + 1e-6


SHAPES = [(1, 5), (7, 33), (33, 300), (300, 784)]
BATCHES = [1, 3, 64]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("relu", [False, True])
def test_codebook_matches_torch(isa, shape, batch, relu):
    rows, cols = shape
    w, indptr, indices, codes, codebook = make_sparse(rows, cols, 0.3, seed=rows * 31 + batch)
    x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(batch))
    bias = torch.randn(rows)
    y = ops.spmm_codebook(x, indptr, indices, codes, codebook, rows, bias=bias, relu=relu)
    ref = torch.nn.functional.linear(x, w, bias)
    if relu:
        ref = torch.relu(ref)
    assert y.shape == (batch, rows) and y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=0, atol=bound(x, w))


@pytest.mark.parametrize("k", [1, 5, 8, 16, 17, 32, 33, 256])
@pytest.mark.parametrize("batch", [1, 9])
def test_every_codebook_size(isa, k, batch):
    w, indptr, indices, codes, codebook = make_sparse(40, 131, 0.5, k=k, seed=k)
    x = torch.randn(batch, 131)
    y = ops.spmm_codebook(x, indptr, indices, codes, codebook, 40)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))


@pytest.mark.parametrize("batch", BATCHES + [16, 40])
def test_fp32_csr_matches_torch(isa, batch):
    w, indptr, indices, codes, codebook = make_sparse(300, 784, 0.1, seed=3)
    values = codebook[codes]
    x = torch.randn(batch, 784)
    y = ops.spmm_csr(x, indptr, indices, values, 300, bias=None)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_scalar_and_avx2_agree(batch):
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    w, indptr, indices, codes, codebook = make_sparse(300, 784, 0.1, seed=5)
    x = torch.randn(batch, 784)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, 300, 784)
    ys, yv = scalar_and_avx2(lambda: ops.spmm_packed(x, packed, relu=True))
    assert not torch.equal(ys, torch.zeros_like(ys))
    torch.testing.assert_close(yv, ys, rtol=0, atol=bound(x, w))


def test_int32_indices_wide_input(isa):
    # in_features > 65536 needs int32 column indices.
    cols = 70_000
    w, indptr, indices, codes, codebook = make_sparse(9, cols, 0.01, seed=7)
    assert indices.dtype == np.int32
    x = torch.randn(3, cols)
    y = ops.spmm_codebook(x, indptr, indices, codes, codebook, 9)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))


def test_int32_indices_narrow_input(isa):
    w, indptr, indices, codes, codebook = make_sparse(33, 300, 0.2, seed=8)
    x = torch.randn(3, 300)
    y = ops.spmm_codebook(x, indptr, indices.astype(np.int32), codes, codebook, 33)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))


@pytest.mark.parametrize("batch", [1, 17])
def test_no_nonzeros_gives_bias(isa, batch):
    rows, cols = 7, 33
    indptr = np.zeros(rows + 1, np.int32)
    empty16 = np.zeros(0, np.uint16)
    bias = torch.linspace(-1, 1, rows)
    x = torch.randn(batch, cols)
    y = ops.spmm_codebook(x, indptr, empty16, np.zeros(0, np.uint8), np.ones(4, np.float32), rows, bias=bias)
    assert torch.equal(y, bias.expand(batch, rows))
    y = ops.spmm_csr(x, indptr, empty16, np.zeros(0, np.float32), rows, bias=bias, relu=True)
    assert torch.equal(y, torch.relu(bias).expand(batch, rows))


def test_unsorted_indices_and_torch_int64_inputs(isa):
    w, indptr, indices, codes, codebook = make_sparse(33, 300, 0.2, seed=9)
    rng = np.random.default_rng(0)
    idx = indices.copy()
    cds = codes.copy()
    for r in range(33):  # shuffle within each row
        s, e = indptr[r], indptr[r + 1]
        perm = rng.permutation(e - s) + s
        idx[s:e], cds[s:e] = indices[perm], codes[perm]
    x = torch.randn(4, 300)
    y = ops.spmm_codebook(x, torch.from_numpy(indptr).long(), torch.from_numpy(idx.astype(np.int64)),
                          torch.from_numpy(cds), torch.from_numpy(codebook), 33)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))


def test_non_contiguous_input_and_zero_batch(isa):
    w, indptr, indices, codes, codebook = make_sparse(7, 33, 0.5, seed=10)
    x = torch.randn(33, 5).T  # a transposed view
    y = ops.spmm_codebook(x, indptr, indices, codes, codebook, 7)
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=bound(x, w))
    y0 = ops.spmm_codebook(torch.zeros(0, 33), indptr, indices, codes, codebook, 7)
    assert y0.shape == (0, 7)


def test_packed_weight_dense_roundtrip():
    w, indptr, indices, codes, codebook = make_sparse(33, 300, 0.2, seed=11)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, 33, 300)
    assert torch.equal(packed.dense(), w)
    assert packed.nnz == len(indices)
    assert packed.nbytes() == indptr.nbytes + indices.nbytes + codes.nbytes + codebook.nbytes


def test_bad_inputs_raise_typed_errors():
    w, indptr, indices, codes, codebook = make_sparse(7, 33, 0.5, seed=12)
    x = torch.randn(2, 33)
    bad = indices.copy()
    bad[0] = 33
    with pytest.raises(OpInputError, match="out of range"):
        ops.spmm_codebook(x, indptr, bad, codes, codebook, 7)
    badc = codes.copy()
    badc[-1] = len(codebook)
    with pytest.raises(OpInputError, match="code"):
        ops.spmm_codebook(x, indptr, indices, badc, codebook, 7)
    badp = indptr.copy()
    badp[3] = badp[4] + 1
    with pytest.raises(OpInputError, match="indptr"):
        ops.spmm_codebook(x, badp, indices, codes, codebook, 7)
    with pytest.raises(OpInputError, match="n_out"):
        ops.spmm_codebook(x, indptr, indices, codes, codebook, 8)
    with pytest.raises(OpInputError, match="features"):
        ops.spmm_packed(torch.randn(2, 34), ops.pack_codebook(indptr, indices, codes, codebook, 7, 33))
    with pytest.raises(OpInputError, match="float32"):
        ops.spmm_codebook(x.double(), indptr, indices, codes, codebook, 7)
    with pytest.raises(OpInputError, match="2-D"):
        ops.spmm_codebook(x[0], indptr, indices, codes, codebook, 7)
    with pytest.raises(OpInputError, match="bias"):
        ops.spmm_codebook(x, indptr, indices, codes, codebook, 7, bias=torch.zeros(6))
    with pytest.raises(OpInputError, match="differ in length"):
        ops.spmm_codebook(x, indptr, indices, codes[:-1], codebook, 7)
    with pytest.raises(OpInputError, match="codebook"):
        ops.spmm_codebook(x, indptr, indices, codes, np.zeros(300, np.float32), 7)
    with pytest.raises(OpInputError, match="uint8"):
        ops.spmm_codebook(x, indptr, indices, codes.astype(np.float32), codebook, 7)


@pytest.mark.parametrize("batch", [2, 16, 33])
def test_packed_sorts_rows_and_blocks_columns(isa, batch):
    # 1000 columns span four column blocks of the batched kernel.
    w, indptr, indices, codes, codebook = make_sparse(50, 1000, 0.2, seed=13)
    rng = np.random.default_rng(1)
    idx, cds = indices.copy(), codes.copy()
    for r in range(50):
        s, e = indptr[r], indptr[r + 1]
        perm = rng.permutation(e - s) + s
        idx[s:e], cds[s:e] = indices[perm], codes[perm]
    packed = ops.pack_codebook(indptr, idx, cds, codebook, 50, 1000)
    assert packed.blocks is not None
    assert torch.equal(packed.dense(), w)
    x = torch.randn(batch, 1000)
    y = ops.spmm_packed(x, packed, bias=torch.ones(50))
    torch.testing.assert_close(y, x @ w.T + 1, rtol=0, atol=bound(x, w))


@pytest.mark.parametrize("batch", [25, 40])
def test_column_blocked_path_for_wide_inputs(isa, batch):
    # 17000 columns x 32 batch columns x 4 bytes passes the 2 MiB where the AVX2 kernel
    # switches to walking the columns block by block.
    w, indptr, indices, codes, codebook = make_sparse(20, 17000, 0.05, seed=15)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, 20, 17000)
    x = torch.randn(batch, 17000)
    y = ops.spmm_packed(x, packed, bias=torch.ones(20), relu=True)
    torch.testing.assert_close(y, torch.relu(x @ w.T + 1), rtol=0, atol=bound(x, w))
    y_plain = ops.spmm_codebook(x, indptr, indices, codes, codebook, 20, bias=torch.ones(20), relu=True)
    torch.testing.assert_close(y, y_plain, rtol=0, atol=bound(x, w))


def make_rows(cols, lengths, k=32, seed=0, idx_dtype=np.uint16):
    """A codebook CSR matrix whose rows hold the given numbers of nonzeros at random
    columns, with small integer codebook values: with integer inputs every partial sum is
    exact in fp32, so any summation order gives the same result and a lost or doubled
    nonzero shows."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((len(lengths), cols), dtype=bool)
    for r, n in enumerate(lengths):
        mask[r, rng.choice(cols, size=n, replace=False)] = True
    codebook = rng.integers(-4, 5, size=k).astype(np.float32)
    codes_full = rng.integers(0, k, size=mask.shape).astype(np.uint8)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(idx_dtype)
    dense = np.where(mask, codebook[codes_full], 0).astype(np.float32)
    return torch.from_numpy(dense), indptr, indices, codes_full[mask], codebook


def exact_product(x, w, bias, relu):
    y = (x.double() @ w.double().T + bias.double()).float()
    return torch.relu(y) if relu else y


# 20011 columns (78 KiB of x) are past the 48 KiB where batch 1 on zmm walks the columns
# in blocks of at most 32 KiB (1999 stay below); row lengths around its 16- and
# 64-nonzero steps, rows that span every block (the full row), and a row count that is
# not a multiple of the 16 rows it takes at a time.
WIDE_COLS = 20011
WIDE_LENGTHS = [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 5000, WIDE_COLS] + [300 + 37 * i for i in range(23)]


@pytest.mark.parametrize("k", [5, 16, 32, 200])
@pytest.mark.parametrize("idx_dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("cols", [1999, WIDE_COLS])
def test_batch1_exact_on_awkward_rows(isa, k, idx_dtype, cols):
    lengths = [min(n, cols) for n in WIDE_LENGTHS]
    w, indptr, indices, codes, codebook = make_rows(cols, lengths, k=k, seed=k, idx_dtype=idx_dtype)
    rows = len(lengths)
    g = torch.Generator().manual_seed(k)
    x = torch.randint(-3, 4, (1, cols), generator=g).float()
    bias = torch.randint(-50, 50, (rows,), generator=g).float()
    ref = exact_product(x, w, bias, relu=True)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, rows, cols)
    assert torch.equal(ops.spmm_packed(x, packed, bias=bias, relu=True), ref)
    assert torch.equal(ops.spmm_csr(x, indptr, indices, codebook[codes], rows, bias=bias, relu=True), ref)


def test_batch1_wide_input_unsorted_rows(isa):
    # Unsorted rows leave a block early; every nonzero must still be counted once.
    w, indptr, indices, codes, codebook = make_rows(WIDE_COLS, WIDE_LENGTHS, seed=21)
    rng = np.random.default_rng(1)
    idx, cds = indices.copy(), codes.copy()
    for r in range(len(WIDE_LENGTHS)):
        s, e = indptr[r], indptr[r + 1]
        perm = rng.permutation(e - s) + s
        idx[s:e], cds[s:e] = indices[perm], codes[perm]
    x = torch.randint(-3, 4, (1, WIDE_COLS), generator=torch.Generator().manual_seed(2)).float()
    y = ops.spmm_codebook(x, indptr, idx, cds, codebook, len(WIDE_LENGTHS))
    assert torch.equal(y, exact_product(x, w, torch.zeros(len(WIDE_LENGTHS)), relu=False))


def test_block_table_is_checked_where_the_kernel_reads_it(isa):
    import dataclasses

    # 17000 columns at batch 40: the AVX2 kernel walks the column blocks (see above).
    w, indptr, indices, codes, codebook = make_sparse(20, 17000, 0.05, seed=14)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, 20, 17000)
    bad = packed.blocks.copy()
    bad[len(bad) // 2] = 10**6
    tampered = dataclasses.replace(packed, blocks=bad)
    assert _C.spmm_reads_blocks(40, 17000) == (isa != "scalar")
    assert not _C.spmm_reads_blocks(1, 17000) and not _C.spmm_reads_blocks(16, 4096)
    if _C.spmm_reads_blocks(40, 17000):
        with pytest.raises(ValueError, match="block table"):
            ops.spmm_packed(torch.randn(40, 17000), tampered)
    # Where the table is not read it cannot do harm, and is not checked.
    x = torch.randn(1, 17000)
    torch.testing.assert_close(ops.spmm_packed(x, tampered), x @ w.T, rtol=0, atol=bound(x, w))


# Short rows (at most 256 nonzeros a row on average) take the product-stream kernel on zmm
# at batch 1: row lengths around its 16- and 32-nonzero steps, empty rows, a chunk of 32
# rows that ends mid-way, LeNet-5's fc1 width.
SHORT_LENGTHS = [0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 0, 0, 200, 7] * 3 + [5, 800, 3]


@pytest.mark.parametrize("k", [5, 26, 200])
@pytest.mark.parametrize("idx_dtype", [np.uint16, np.int32])
def test_batch1_short_rows_exact(isa, k, idx_dtype):
    w, indptr, indices, codes, codebook = make_rows(800, SHORT_LENGTHS, k=k, seed=k + 1, idx_dtype=idx_dtype)
    rows = len(SHORT_LENGTHS)
    g = torch.Generator().manual_seed(k)
    x = torch.randint(-3, 4, (1, 800), generator=g).float()
    bias = torch.randint(-50, 50, (rows,), generator=g).float()
    ref = exact_product(x, w, bias, relu=False)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, rows, 800)
    assert torch.equal(ops.spmm_packed(x, packed, bias=bias), ref)
    assert torch.equal(ops.spmm_csr(x, indptr, indices, codebook[codes], rows, bias=bias), ref)
