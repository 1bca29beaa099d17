"""The HML-D layer: shapes, carried state, stable parameterization, initialization, gradients."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamfin.core import HMLD, EnergyTerms, HMLDConfig, scan_chunked, shadow_energy

MODES = ("conservative", "dissipative", "selective")


def make_layer(mode, d_model=6, seed=0, **kwargs):
    torch.manual_seed(seed)
    return HMLD(HMLDConfig(d_model=d_model, mode=mode, chunk_size=4, **kwargs)).double()


@pytest.mark.parametrize("mode", MODES)
def test_layer_maps_sequences_to_sequences_and_returns_energy_terms(mode):
    layer = make_layer(mode, d_state=5)
    x = torch.randn(3, 11, 6, dtype=torch.float64)
    y, state, terms = layer(x, return_energy=True)
    assert y.shape == (3, 11, 6) and state.shape == (3, 5, 2)
    assert isinstance(terms, EnergyTerms)
    for name in ("energy", "dissipated", "work", "shadow_energy", "residual"):
        assert getattr(terms, name).shape == (3, 11, 5), name
    assert torch.isfinite(y).all()
    if mode == "conservative":
        assert terms.dissipated.abs().max() == 0
    else:
        assert terms.dissipated.min() >= 0 and terms.dissipated.max() > 0


@pytest.mark.parametrize("mode", MODES)
def test_layer_fed_in_pieces_equals_layer_fed_whole(mode):
    layer = make_layer(mode)
    x = torch.randn(2, 23, 6, dtype=torch.float64)
    y, final = layer(x)
    y1, s1 = layer(x[:, :10])
    y2, s2 = layer(x[:, 10:], s1)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2, final, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_layer_streamed_one_step_at_a_time_equals_batch(mode):
    layer = make_layer(mode)
    x = torch.randn(2, 13, 6, dtype=torch.float64)
    y, final = layer(x)
    state, ys = None, []
    for t in range(13):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, final, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["dissipative", "selective"])
def test_layer_passes_gradcheck_in_float64(mode):
    layer = make_layer(mode, d_model=3)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    state = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: layer(x, s)[0], (x, state), eps=1e-6, atol=1e-6)
    # and every parameter receives a finite gradient
    layer(x, state)[0].square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_initialization_spreads_frequencies_and_half_lives_for_long_memory():
    layer = HMLD(HMLDConfig(d_model=256))
    dt, gamma, k, m = (t.double() for t in layer.coefficients(torch.zeros(1, 1, 256)))
    theta = torch.acos(1 - dt * dt * k / (2 * m))  # phase advance per step at γ = 0
    half_life = math.log(2) / (0.5 * gamma * dt)  # steps for |state| to halve
    assert theta.max() / theta.min() > 100  # frequencies spread over two decades
    assert half_life.max() > 1000  # long memory exists at init
    assert half_life.max() / half_life.min() > 100
    assert (dt * dt * k / m < 4).all()


def test_conservative_mode_has_no_damping_parameter():
    layer = make_layer("conservative")
    assert not any("gamma" in name for name, _ in layer.named_parameters())
    _, gamma, _, _ = layer.coefficients(torch.zeros(1, 1, 6, dtype=torch.float64))
    assert (gamma == 0).all()


def test_bad_config_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="mode must be one of"):
        HMLDConfig(d_model=4, mode="chaotic")
    with pytest.raises(ValueError, match="x must be"):
        make_layer("dissipative")(torch.zeros(2, 3, 5, dtype=torch.float64))


def test_default_state_width_is_d_model():
    assert HMLDConfig(d_model=7).d_state == 7


RAW = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mass=RAW,
    stiffness=RAW,
    step=RAW,
    damping=RAW,
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 99),
)
def test_no_parameter_setting_diverges_over_100k_steps(mass, stiffness, step, damping, mode, seed):
    # Any raw parameter value gives Δ²k/m < 4 and γ ≥ 0 (also after float32 rounding), so with
    # fixed Δ the shadow energy, a positive definite quadratic form, never increases: the state
    # stays bounded by its initial shadow energy. Checked over 10^5 unforced steps.
    layer = HMLD(HMLDConfig(d_model=2, d_state=3, mode=mode, selective_dt=False))
    with torch.no_grad():
        layer.mass_raw.fill_(mass)
        layer.stiffness_raw.fill_(stiffness)
        layer.dt_raw.fill_(step)
        if mode != "conservative":
            layer.gamma_raw.fill_(damping)
    x = torch.randn(1, 1, 2)
    dt, gamma, k, m = layer.coefficients(x)  # float32, as the layer uses them
    assert (dt * dt * k / m < 4).all() and (gamma >= 0).all()
    dt, gamma, k, m = (t.double().reshape(-1) for t in (dt, gamma, k, m))  # (3,) each
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(1, 3, 2, generator=g, dtype=torch.float64)
    L = 100_000
    qp, _ = scan_chunked(
        torch.zeros(1, L, 3, dtype=torch.float64), dt, gamma, k, m, state, chunk_size=256
    )
    assert torch.isfinite(qp).all()
    h0 = shadow_energy(state, dt, k, m)
    assert (shadow_energy(qp, dt, k, m) <= h0 * (1 + 1e-9) + 1e-300).all()


def test_selective_steps_stay_inside_the_stability_region_for_any_input():
    layer = make_layer("selective")
    x = 1e4 * torch.randn(2, 50, 6, dtype=torch.float64)
    dt, gamma, k, m = layer.coefficients(x)
    assert dt.shape == gamma.shape == (2, 50, 6)
    # (Δ_t may underflow to 0 for extreme inputs: the identity step, still stable)
    assert (dt * dt * k / m < 4).all() and (gamma >= 0).all() and (dt >= 0).all()
