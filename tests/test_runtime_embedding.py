import pytest
import torch
import torch.nn as nn

import deepcomp
from deepcomp.codec import decode
from deepcomp.errors import ModelError
from deepcomp.runtime import load, resident_weight_bytes
from deepcomp.runtime.embedding import RuntimeEmbedding


class Net(nn.Module):
    def __init__(self, vocab=300, dim=33, max_norm=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, max_norm=max_norm)
        self.pos = nn.Embedding(7, dim)
        self.fc = nn.Linear(dim, 5)

    def forward(self, ids):
        return self.fc(self.emb(ids) + self.pos.weight[: ids.shape[-1]])


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "emb.dcz"
    deepcomp.save(Net().state_dict(), p, bits={"fc": 8})
    return p


@pytest.mark.parametrize("policy", ["compact", "exact", "auto"])
def test_embedding_runs_from_codes_and_matches_the_decoded_model(saved, policy):
    ref = Net().eval()
    ref.load_state_dict(decode(saved))
    m = load(saved, model=Net(), policy=policy)
    assert isinstance(m.emb, RuntimeEmbedding) and m.emb.codes.dtype == torch.uint8
    for shape in [(1,), (1, 7), (3, 5), (2, 1)]:
        ids = torch.randint(0, 300, shape)
        with torch.no_grad():
            assert torch.equal(m.emb(ids), ref.emb(ids))
            assert torch.equal(m.emb(ids.to(torch.int32)), ref.emb(ids))
            # int8 (auto, compact) may run the Linear: within its stated 3 % of the scale.
            tol = 1e-5 if policy == "exact" else 3e-2
            assert (m(ids) - ref(ids)).abs().max() <= tol * ref(ids).abs().max()
    assert m.emb(torch.zeros(0, dtype=torch.long)).shape == (0, 33)
    # The table is held as 1 byte per weight (plus a codebook), not as 4.
    held = sum(b.numel() * b.element_size() for b in m.emb.buffers())
    assert held == 300 * 33 + 4 * m.emb.codebook.numel()
    assert resident_weight_bytes(m) < resident_weight_bytes(ref) - 2 * 300 * 33


def test_embedding_rejects_bad_ids(saved):
    m = load(saved, model=Net())
    with pytest.raises(ModelError, match=r"\[0, 300\)"):
        m.emb(torch.tensor([[1, 300]]))
    with pytest.raises(ModelError, match=r"\[0, 300\)"):
        m.emb(torch.tensor([-1]))
    with pytest.raises(ModelError, match="integer token ids"):
        m.emb(torch.tensor([1.0]))


def test_embedding_with_max_norm_stays_dense(saved):
    m = load(saved, model=Net(max_norm=1.0))
    assert type(m.emb) is nn.Embedding


def test_embedding_shape_mismatch_is_refused(saved):
    with pytest.raises(ModelError, match="emb.weight"):
        load(saved, model=Net(vocab=301))
