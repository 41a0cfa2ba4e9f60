"""An embedding table kept in the file's shared form: uint8 codes into a codebook.

A transformer's word embeddings are most of its parameters (all-MiniLM-L6-v2: 47 of its
91 MB) but a forward pass reads only the rows of the tokens it sees, so decoding the table
to fp32 at load time costs 4x the memory for nothing: each call gathers its rows' codes
and looks them up in the codebook, which gives exactly the decoded model's values.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from deepcomp.errors import ModelError
from deepcomp.runtime.weights import WeightForm


def can_keep_codes(m: nn.Module, form: WeightForm) -> bool:
    """Whether `m` can run from `form`'s codes: a plain lookup of a dense shared table
    (max_norm would rewrite the table in place, which a codebook form cannot hold)."""
    return type(m) is nn.Embedding and m.max_norm is None and form.kind == "codes" \
        and form.codebook is not None and form.codebook.size <= 256 and len(form.shape) == 2


class RuntimeEmbedding(nn.Module):
    """nn.Embedding's forward over codes [num_embeddings, dim] (uint8) and a codebook."""

    def __init__(self, name: str, form: WeightForm) -> None:
        super().__init__()
        self.layer_name = name
        self.num_embeddings, self.embedding_dim = int(form.shape[0]), int(form.shape[1])
        # Buffers, not parameters: the runtime is for inference, and resident_weight_bytes
        # counts buffers as what the model holds. Not persistent: the file is the state.
        self.register_buffer("codes", torch.from_numpy(form.codes.reshape(form.shape)), persistent=False)
        self.register_buffer("codebook", torch.from_numpy(form.codebook.copy()), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise ModelError(f"embedding '{self.layer_name}' takes integer token ids (int64 or int32), "
                             f"got {getattr(ids, 'dtype', type(ids).__name__)}")
        flat = ids.reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise ModelError(f"embedding '{self.layer_name}': token ids must lie in [0, {self.num_embeddings}), "
                             f"got {int(flat.min())}..{int(flat.max())}")
        rows = self.codes.index_select(0, flat.to(torch.int64))
        return self.codebook[rows.to(torch.int64)].reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.layer_name}: {self.num_embeddings} x {self.embedding_dim}, " \
               f"{self.codebook.numel()}-entry codebook"
