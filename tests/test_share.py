"""Weight sharing: centroid inits by hand, k-means properties, trained quantization."""
import numpy as np
import pytest
import torch
from torch import nn

from deepcomp.errors import DeepcompError
from deepcomp.share import (SharedWeight, finalize, init_centroids, kmeans_1d, parse_bits,
                            quantize_model, share_state_dict, share_tensor)


def test_linear_init_by_hand():
    v = np.array([3.0, -1.0, 0.5, 2.0])
    assert init_centroids(v, 5, "linear").tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0]


def test_density_init_by_hand():
    v = np.arange(1.0, 9.0)[::-1]  # 8 values, 1..8, unsorted on purpose
    # p = 1/8, 3/8, 5/8, 7/8 -> sorted[ceil(8p) - 1] = sorted[0, 2, 4, 6]
    assert init_centroids(v, 4, "density").tolist() == [1.0, 3.0, 5.0, 7.0]
    # Weights bunched near zero pull density centroids in, unlike linear ones.
    v = np.array([-1.0, -0.01, 0.0, 0.01, 0.02, 1.0])
    assert init_centroids(v, 2, "density").tolist() == [-0.01, 0.02]


def test_forgy_init_by_hand():
    v = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    got = init_centroids(v, 3, "forgy", seed=7)
    idx = np.random.default_rng(7).choice(5, size=3, replace=False)
    assert got.tolist() == sorted(np.sort(v)[idx].tolist())
    assert init_centroids(v, 5, "forgy", seed=3).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert init_centroids(v, 3, "forgy", seed=7).tolist() == got.tolist()


def test_kmeanspp_init_by_hand():
    # Whichever point comes first, D^2 sampling must pick the other value next.
    v = np.array([0.0, 0.0, 0.0, 10.0])
    for seed in range(10):
        assert init_centroids(v, 2, "kmeans++", seed=seed).tolist() == [0.0, 10.0]
    # Seeded: same seed, same centroids; they are data points.
    v = np.random.default_rng(0).standard_normal(1000)
    a = init_centroids(v, 8, "kmeans++", seed=5)
    assert a.tolist() == init_centroids(v, 8, "kmeans++", seed=5).tolist()
    assert np.isin(a, v).all()


@pytest.mark.parametrize("init", ["linear", "density", "forgy", "kmeans++"])
@pytest.mark.parametrize("k", [2, 5, 32, 256])
def test_kmeans_loss_never_increases(init, k):
    rng = np.random.default_rng(k)
    x = np.concatenate([rng.standard_normal(3000) * 0.05, rng.laplace(0.3, 0.1, 2000)])
    r = kmeans_1d(x, k, init, seed=1, max_iter=50)
    losses = np.asarray(r.losses)
    assert (np.diff(losses) <= 1e-9 * losses[0]).all()
    # Final labels are the nearest centroid (brute force) and the loss matches them.
    brute = np.abs(x[:, None] - r.centroids[None, :]).argmin(1)
    assert np.allclose(r.centroids[brute], r.centroids[r.labels])
    assert np.all(np.diff(r.centroids) >= 0)


def test_kmeans_converges_to_obvious_clusters():
    x = np.array([0.0, 0.1, 0.2, 10.0, 10.1, 10.2, -5.0])
    r = kmeans_1d(x, 3, "linear")
    assert np.allclose(r.centroids, [-5.0, 0.1, 10.1])
    assert r.labels.tolist() == [1, 1, 1, 2, 2, 2, 0]


def test_share_tensor_properties():
    torch.manual_seed(0)
    w = torch.randn(64, 50)
    w[w.abs() < 0.5] = 0.0
    w[0, 0] = -0.0
    s = share_tensor(w, 3, "linear")
    assert s.shape == w.shape and s.dtype == w.dtype
    assert torch.equal(s == 0, w == 0)
    assert not torch.signbit(s[w == 0]).any()  # zeros are +0.0, not -0.0
    assert torch.unique(s[s != 0]).numel() <= 8
    # Every weight went to its nearest centroid, so sharing again changes nothing.
    assert torch.equal(share_tensor(s, 3, "linear"), s)
    assert torch.equal(share_tensor(w, 3, "forgy", seed=4), share_tensor(w, 3, "forgy", seed=4))
    # Quantisation error shrinks with more bits.
    err = [float((share_tensor(w, b) - w).pow(2).sum()) for b in (2, 4, 6)]
    assert err[0] > err[1] > err[2]


def test_share_state_dict_kinds_and_errors():
    torch.manual_seed(0)
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
          "fc.weight": torch.randn(10, 20), "fc.bias": torch.randn(10),
          "fc3.weight": torch.randn(5, 5), "bn.running_mean": torch.randn(4)}
    out = share_state_dict(sd, {"fc": 2, "conv": 3, "fc3": 1})
    assert out["conv.bias"] is sd["conv.bias"] and out["fc.bias"] is sd["fc.bias"]
    assert out["bn.running_mean"] is sd["bn.running_mean"]
    assert torch.unique(out["conv.weight"]).numel() <= 8
    assert torch.unique(out["fc.weight"]).numel() <= 4
    assert torch.unique(out["fc3.weight"]).numel() <= 2
    assert share_state_dict(sd, {"conv": 3})["fc.weight"] is sd["fc.weight"]
    for bad in [{"fc": 0}, {"fc": 9}, {"fc": 2.5}]:
        with pytest.raises(DeepcompError):
            share_state_dict(sd, bad)
    with pytest.raises(DeepcompError, match="init"):
        share_state_dict(sd, {"fc": 2}, init="random")
    assert parse_bits("fc=5,conv=8") == {"fc": 5, "conv": 8}
    with pytest.raises(DeepcompError):
        parse_bits("fc:5")


def _tiny():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    with torch.no_grad():
        m[0].weight[m[0].weight.abs() < 0.15] = 0.0
    return m


def test_centroid_gradient_is_sum_of_member_gradients():
    m = _tiny()
    x = torch.randn(7, 6)
    y = torch.randint(0, 3, (7,))
    shared = quantize_model(m, {"fc": 2}, "linear")
    sw: SharedWeight = shared["0.weight"]
    nn.functional.cross_entropy(m(x), y).backward()

    # Reference: the same shared weights as a plain leaf tensor through autograd.
    ref = _tiny()
    w_leaf = m[0].weight.detach().clone().requires_grad_(True)
    w2 = m[2].weight.detach().clone()
    h = torch.tanh(nn.functional.linear(x, w_leaf, ref[0].bias))
    nn.functional.cross_entropy(nn.functional.linear(h, w2, ref[2].bias), y).backward()
    flat_grad = w_leaf.grad.reshape(-1)
    expected = torch.zeros(4)
    for c in range(4):
        members = sw.pos[sw.index == c]
        expected[c] = flat_grad[members].sum()
    assert torch.allclose(sw.codebook.grad, expected, atol=1e-6)
    assert (sw.codebook.grad != 0).any()


def test_trained_quantization_keeps_zeros_and_codebook():
    m = _tiny()
    zeros = m[0].weight == 0
    shared = quantize_model(m, {"fc": 2}, "linear")
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert "0.parametrizations.weight.original" not in trainable
    assert "0.parametrizations.weight.0.codebook" in trainable
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    before = shared["0.weight"].codebook.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(m(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
        opt.step()
    assert not torch.equal(before, shared["0.weight"].codebook)
    finalize(m)
    w = m[0].weight
    assert isinstance(w, nn.Parameter) and w.requires_grad
    assert torch.equal(w == 0, zeros)
    assert torch.unique(w[w != 0]).numel() <= 4
    assert torch.unique(m[2].weight).numel() <= 4
    assert set(dict(m.named_parameters())) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_weighted_kmeans_with_equal_weights_is_plain_kmeans():
    from deepcomp.share import kmeans_1d

    x = np.random.default_rng(0).normal(size=2000)
    a = kmeans_1d(x, 16)
    b = kmeans_1d(x, 16, weights=np.full(x.size, 3.0))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-12, atol=1e-12)


def test_weighted_kmeans_centroid_is_the_weighted_mean():
    from deepcomp.share import kmeans_1d

    # One cluster: its centroid is the weighted mean, not the plain one.
    x = np.array([0.0, 1.0, 2.0, 10.0])
    w = np.array([1.0, 1.0, 1.0, 7.0])
    res = kmeans_1d(x, 1, weights=w)
    assert res.centroids[0] == pytest.approx((0 + 1 + 2 + 70) / 10)
    # A segment whose only value weighs 0 keeps its centroid (no 0/0); the other
    # centroid is the weighted mean of its three values.
    res = kmeans_1d(np.array([0.0, 0.1, 5.0, 100.0]), 2, weights=np.array([1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(res.centroids, [5.1 / 3, 100.0])


@pytest.mark.parametrize("weights,match", [(np.ones(3), "4 finite"), (np.array([1.0, -1.0, 1.0, 1.0]), "non-negative"),
                                           (np.array([1.0, np.nan, 1.0, 1.0]), "finite")])
def test_bad_kmeans_weights_are_a_clear_error(weights, match):
    from deepcomp.share import ShareSpecError, kmeans_1d

    with pytest.raises(ShareSpecError, match=match):
        kmeans_1d(np.array([0.0, 1.0, 2.0, 3.0]), 2, weights=weights)


def test_share_tensor_importance_shape_must_match():
    from deepcomp.share import ShareSpecError, share_tensor

    with pytest.raises(ShareSpecError, match="one number per weight"):
        share_tensor(torch.randn(4, 5), 2, importance=torch.ones(5))
