"""A layer's weight as the file stores it, and the forms derived from it on demand.

The file form stays resident: CSR with uint8 cluster codes into a codebook (pruned and
shared), codes alone (shared, not pruned), or a raw array. Dense fp32 and packed int8
are built only when the cost model wants to try or use them, and dropped when it does
not pick them, so a model that runs sparse keeps only the compressed bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepcomp.errors import DczFormatError

# Below this fraction of nonzeros a shared-but-dense or raw tensor is also offered as CSR.
SPARSE_DENSITY = 0.5


def _as_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _index_dtype(cols: int):
    return np.uint16 if cols <= 65536 else np.int32


@dataclass
class WeightForm:
    """One weight tensor in the form it was stored, plus its matrix view (rows x cols)."""

    name: str
    shape: tuple
    codebook: np.ndarray | None = None   # float32[K]
    codes: np.ndarray | None = None      # uint8[nnz] (CSR) or uint8[numel] (dense codes)
    indptr: np.ndarray | None = None     # int32[rows + 1]
    indices: np.ndarray | None = None    # uint16 / int32 [nnz]
    values: np.ndarray | None = None     # float32[nnz], CSR without a codebook
    array: np.ndarray | None = None      # float32[shape], raw

    @property
    def rows(self) -> int:
        return int(self.shape[0])

    @property
    def cols(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def kind(self) -> str:
        if self.indptr is not None:
            return "csr_codebook" if self.codebook is not None else "csr"
        if self.codes is not None:
            return "codes"
        return "raw"

    @property
    def is_sparse(self) -> bool:
        return self.indptr is not None

    def nnz(self) -> int:
        if self.indptr is not None:
            return int(self.indptr[-1])
        return int(np.count_nonzero(self.dense_np()))

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.codebook, self.codes, self.indptr, self.indices,
                                      self.values, self.array) if a is not None)

    # -- construction

    @classmethod
    def from_stored(cls, name: str, obj) -> "WeightForm":
        """From one of the codec's dataclasses (RawTensor / SharedDense / SharedSparse)."""
        shape = tuple(int(s) for s in obj.shape)
        if getattr(obj, "indptr", None) is not None:
            codebook = np.ascontiguousarray(obj.codebook, np.float32)
            if codebook.size == 0:
                # An all-zero weight (a zero-initialised head, as torchvision's ViT has)
                # is stored with no centroids; the kernels want at least one entry, and
                # with no non-zeros none is ever read.
                codebook = np.zeros(1, np.float32)
            w = cls(name, shape, codebook=codebook,
                    codes=np.ascontiguousarray(obj.codes, np.uint8),
                    indptr=np.ascontiguousarray(obj.indptr, np.int32),
                    indices=np.ascontiguousarray(obj.indices))
            w._check_csr()
            return w
        if getattr(obj, "codes", None) is not None:
            w = cls(name, shape, codebook=np.ascontiguousarray(obj.codebook, np.float32),
                    codes=np.ascontiguousarray(obj.codes, np.uint8).reshape(-1))
            if w.codes.size != int(np.prod(shape)):
                raise DczFormatError(f"tensor '{name}': {w.codes.size} codes for shape {list(shape)}")
            if w.codes.size and int(w.codes.max()) >= w.codebook.size:
                raise DczFormatError(f"tensor '{name}': code out of range of its codebook")
            return w.compacted()
        arr = np.ascontiguousarray(_as_np(obj.array), dtype=np.float32).reshape(shape)
        return cls(name, shape, array=arr)

    @classmethod
    def from_dense(cls, name: str, w: torch.Tensor, max_codebook: int = 256) -> "WeightForm":
        """From a dense tensor: codebook form when it has few distinct values, else raw."""
        a = np.ascontiguousarray(_as_np(w), dtype=np.float32)
        nz = a.reshape(-1)
        uniq = np.unique(nz[nz != 0])
        if uniq.size + 1 <= max_codebook:
            codebook = np.concatenate([np.zeros(1, np.float32), uniq]).astype(np.float32)
            codes = np.searchsorted(uniq, nz).astype(np.int64) + 1
            codes[nz == 0] = 0
            return cls(name, tuple(a.shape), codebook=codebook,
                       codes=codes.astype(np.uint8)).compacted()
        return cls(name, tuple(a.shape), array=a)

    def compacted(self) -> "WeightForm":
        """Dense codes of a mostly-zero tensor become CSR (smaller and the sparse path)."""
        if self.kind != "codes":
            return self
        vals = self.codebook[self.codes]
        nzmask = vals != 0
        if not nzmask.size or nzmask.mean() > SPARSE_DENSITY:
            return self
        m = nzmask.reshape(self.rows, self.cols)
        counts = m.sum(axis=1)
        indptr = np.zeros(self.rows + 1, np.int32)
        np.cumsum(counts, out=indptr[1:])
        r, c = np.nonzero(m)
        codes2 = self.codes.reshape(self.rows, self.cols)[r, c]
        return WeightForm(self.name, self.shape, codebook=self.codebook,
                          codes=np.ascontiguousarray(codes2, np.uint8), indptr=indptr,
                          indices=np.ascontiguousarray(c, _index_dtype(self.cols)))

    def _check_csr(self) -> None:
        ip, idx = self.indptr, self.indices
        where = f"tensor '{self.name}'"
        if ip.shape != (self.rows + 1,) or ip[0] != 0 or np.any(np.diff(ip) < 0):
            raise DczFormatError(f"{where}: bad CSR row pointers")
        nnz = int(ip[-1])
        if idx.shape != (nnz,) or self.codes.shape != (nnz,):
            raise DczFormatError(f"{where}: CSR arrays disagree on the number of nonzeros")
        if idx.dtype not in (np.uint16, np.int32):
            raise DczFormatError(f"{where}: CSR indices must be uint16 or int32, got {idx.dtype}")
        if nnz and (int(idx.max()) >= self.cols or int(idx.min()) < 0):
            raise DczFormatError(f"{where}: CSR column index out of range")
        if nnz and int(self.codes.max()) >= self.codebook.size:
            raise DczFormatError(f"{where}: code out of range of its codebook")

    # -- derived forms

    def dense_np(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        if self.indptr is None:
            return self.codebook[self.codes].reshape(self.shape)
        out = np.zeros((self.rows, self.cols), np.float32)
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        vals = self.codebook[self.codes] if self.codebook is not None else self.values
        out[rows, self.indices.astype(np.int64)] = vals
        return out.reshape(self.shape)

    def dense(self) -> torch.Tensor:
        """A new fp32 tensor of the weight's shape (or the raw array, shared)."""
        return torch.from_numpy(np.ascontiguousarray(self.dense_np()))

    def density(self) -> float:
        n = self.rows * self.cols
        return self.nnz() / n if n else 0.0

    def csr_from_raw(self) -> "WeightForm":
        """A CSR fp32 form of a raw tensor (for the sparse path)."""
        m = self.dense_np().reshape(self.rows, self.cols)
        mask = m != 0
        indptr = np.zeros(self.rows + 1, np.int32)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        r, c = np.nonzero(mask)
        return WeightForm(self.name, self.shape, indptr=indptr,
                          indices=np.ascontiguousarray(c, _index_dtype(self.cols)),
                          values=np.ascontiguousarray(m[r, c], np.float32))
