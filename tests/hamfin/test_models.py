"""One shared contract check for every model variant (after neuralforecast's check_model)."""

from __future__ import annotations

import pytest
import torch

from hamfin.models import MODEL_NAMES, ModelConfig, build_model
from hamfin.system import ForecastSystem, TrainConfig

CONFIG = ModelConfig(d_model=8, n_layers=2, d_state=8, n_heads=2, chunk_size=8)
B, L, F = 3, 20, 5


@pytest.fixture(params=MODEL_NAMES)
def model(request):
    torch.manual_seed(0)
    return build_model(request.param, CONFIG, n_features=F).double()


def test_every_model_returns_per_bar_heads_and_per_layer_energy(model):
    out = model(torch.randn(B, L, F, dtype=torch.float64), return_energy=True)
    for head in (out.predicted_return, out.direction_logit, out.log_volatility):
        assert head.shape == (B, L)
        assert torch.isfinite(head).all()
    assert out.hidden.shape == (B, L, CONFIG.d_model)
    assert out.energy.shape == (B, L, CONFIG.n_layers)
    assert model(torch.randn(B, L, F, dtype=torch.float64)).energy is None


def test_every_model_is_causal_changing_the_future_leaves_the_past_unchanged(model):
    x = torch.randn(B, L, F, dtype=torch.float64)
    cut = 11
    changed = x.clone()
    changed[:, cut:] = torch.randn(B, L - cut, F, dtype=torch.float64) * 10
    a, b = model(x), model(changed)
    for name in ("predicted_return", "direction_logit", "log_volatility"):
        past_a, past_b = getattr(a, name)[:, :cut], getattr(b, name)[:, :cut]
        torch.testing.assert_close(past_a, past_b, rtol=1e-9, atol=1e-9)
        assert not torch.allclose(getattr(a, name)[:, cut:], getattr(b, name)[:, cut:])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_has_a_finite_loss_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    system = ForecastSystem(name, CONFIG, TrainConfig(), n_features=F)
    x = torch.randn(B, L, F)
    y = torch.stack(
        [torch.randn(B, L), (torch.rand(B, L) > 0.5).float(), torch.rand(B, L) + 0.1], dim=-1
    )
    w = torch.zeros(B, L)
    w[:, L // 2 :] = 1.0
    parts = system.losses((x, y, w))
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    missing = [n for n, p in system.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in system.parameters())
    assert sum(float(p.grad.abs().sum()) for p in system.parameters()) > 0


def test_unknown_model_name_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match="hmld"):
        build_model("gru", CONFIG, n_features=F)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_under_bf16_autocast_with_a_finite_loss(name):
    torch.manual_seed(0)
    system = ForecastSystem(name, CONFIG, TrainConfig(), n_features=F)
    x = torch.randn(B, L, F)
    y = torch.stack([torch.randn(B, L), torch.ones(B, L), torch.ones(B, L)], dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = system.losses((x, y, torch.ones(B, L)))["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in system.parameters() if p.grad is not None)
