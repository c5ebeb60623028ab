"""The mathematics of directions: normalisation, PCA through the streamed Gram matrix, the line."""
import numpy as np
import pytest
import torch

from landscape import directions as D
from landscape.errors import UserError
from landscape.models import digits_cnn


def _weights():
    torch.manual_seed(0)
    model = digits_cnn()
    names = [n for n, _ in model.named_parameters()]
    return model, names, [p.detach().clone() for p in model.parameters()]


def test_filter_norm_matches_weights_per_slice_and_zeroes_1d_under_biasbn():
    _, names, weights = _weights()
    d = D.random_directions(names, weights, 2, norm="filter", ignore="biasbn", seed=3)
    for w, dx, dy in zip(weights, d.x, d.y):
        if w.dim() <= 1:
            assert torch.count_nonzero(dx) == 0 and torch.count_nonzero(dy) == 0
        else:
            for dd in (dx, dy):
                torch.testing.assert_close(dd.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-6)
    assert not torch.equal(d.x[0], d.y[0])


def test_filter_norm_without_ignore_copies_1d_weights():
    _, names, weights = _weights()
    weights = [w + 0.5 for w in weights]  # BatchNorm biases start at 0: make them visible
    d = D.random_directions(names, weights, 1, norm="filter", ignore="none", seed=0)
    for w, dx in zip(weights, d.x):
        if w.dim() <= 1:
            assert torch.equal(dx, w)


def test_layer_and_model_normalisation():
    _, names, weights = _weights()
    layer = D.random_directions(names, weights, 1, norm="layer", ignore="biasbn", seed=1)
    for w, dx in zip(weights, layer.x):
        if w.dim() > 1:
            assert dx.norm().item() == pytest.approx(w.norm().item(), rel=1e-5)
    model = D.random_directions(names, weights, 1, norm="model", ignore="biasbn", seed=1)
    kept_w = torch.cat([w.flatten() for w in weights if w.dim() > 1])
    assert D.flat(model.x).norm().item() == pytest.approx(kept_w.norm().item(), rel=1e-5)
    none = D.random_directions(names, weights, 1, norm="none", ignore="none", seed=1)
    assert D.flat(none.x).std().item() == pytest.approx(1.0, abs=0.05)  # untouched N(0, 1)


def test_directions_are_seeded():
    _, names, weights = _weights()
    a = D.random_directions(names, weights, 2, seed=7)
    b = D.random_directions(names, weights, 2, seed=7)
    c = D.random_directions(names, weights, 2, seed=8)
    assert torch.equal(D.flat(a.y), D.flat(b.y)) and not torch.equal(D.flat(a.x), D.flat(c.x))


def test_unknown_norm_is_a_user_error():
    _, names, weights = _weights()
    with pytest.raises(UserError, match="norm 'filtre'"):
        D.random_directions(names, weights, 2, norm="filtre")


def _trajectory(tmp_path, n=6):
    """n checkpoints of a small model along a noisy curved path; returns paths, final state, names."""
    torch.manual_seed(1)
    model = digits_cnn(width=4)
    names = [k for k, _ in model.named_parameters()]
    base = {k: v.clone() for k, v in model.state_dict().items()}
    paths = []
    for i in range(n):
        state = {k: (v + (0.3 * i + 0.05 * i * i) * torch.randn_like(v.float())).to(v.dtype)
                 if v.is_floating_point() else v for k, v in base.items()}
        path = tmp_path / f"epoch_{i:03d}.pt"
        torch.save({"state_dict": state}, path)
        paths.append(path)
    final = torch.load(paths[-1], weights_only=True)["state_dict"]
    return paths, final, names


def test_pca_equals_direct_svd_with_streamed_gram(tmp_path):
    paths, final, names = _trajectory(tmp_path)
    # chunk_bytes so small that every tensor is split into many chunks
    d = D.pca_directions(paths, final, names, ignore="biasbn", chunk_bytes=8 * 6 * 7)
    keep = [n for n in names if final[n].dim() > 1]
    rows = []
    for p in paths:
        s = torch.load(p, weights_only=True)["state_dict"]
        rows.append(torch.cat([(s[n] - final[n]).flatten().double() for n in keep]))
    m = torch.stack(rows).numpy()
    mc = m - m.mean(0)
    _, sv, vt = np.linalg.svd(mc, full_matrices=False)
    got = [torch.cat([t.flatten() for n, t in zip(names, dd) if n in keep]).double().numpy() for dd in (d.x, d.y)]
    for k in range(2):
        cos = abs(np.dot(got[k], vt[k])) / np.linalg.norm(got[k])
        assert cos == pytest.approx(1.0, abs=1e-6)
        assert np.linalg.norm(got[k]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(d.explained_variance_ratio, (sv ** 2 / (sv ** 2).sum())[:2], rtol=1e-6)
    # every ignored (1-D) tensor is zero in both directions
    assert all(torch.count_nonzero(t) == 0 for n, t in zip(names, d.x) if n not in keep)
    # projections: least squares of theta_i - theta_final onto the plane; the final point is the origin
    basis = np.stack(got, 1)
    expected = np.linalg.lstsq(basis, m.T, rcond=None)[0].T
    np.testing.assert_allclose(d.trajectory, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d.trajectory[-1], 0.0, atol=1e-9)


def test_pca_needs_three_checkpoints(tmp_path):
    paths, final, names = _trajectory(tmp_path, n=2)
    with pytest.raises(UserError, match="at least 3 checkpoints"):
        D.pca_directions(paths, final, names)


def test_save_and_load_roundtrip_checks_names(tmp_path):
    _, names, weights = _weights()
    d = D.random_directions(names, weights, 2, seed=2)
    D.save(tmp_path / "d.h5", d)
    back = D.load(tmp_path / "d.h5", names)
    assert all(torch.equal(a, b) for a, b in zip(d.x + d.y, back.x + back.y))
    assert back.attrs["norm"] == "filter" and back.attrs["seed"] == 2
    with pytest.raises(UserError, match="other parameters"):
        D.load(tmp_path / "d.h5", names[::-1])
