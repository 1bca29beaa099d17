"""Physics of the discrete step: volume contraction, shadow energy, the energy balance."""

import math

import pytest
import torch

from hamfin.core import energy_terms, scan_chunked, scan_ref, shadow_energy, transition


def random_parameters(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = 0.1 + 5 * torch.rand(n, generator=g, dtype=torch.float64)
    m = 0.1 + 5 * torch.rand(n, generator=g, dtype=torch.float64)
    dt = 2 * torch.sqrt(m / k) * 0.999 * torch.rand(n, generator=g, dtype=torch.float64)
    gamma = 3 * torch.rand(n, generator=g, dtype=torch.float64)
    return dt, gamma, k, m


def test_transition_determinant_is_exp_minus_gamma_dt():
    dt, gamma, k, m = random_parameters(1000)
    A, _ = transition(dt, gamma, k, m)
    torch.testing.assert_close(torch.linalg.det(A), torch.exp(-gamma * dt), rtol=1e-12, atol=0)


def test_transition_is_symplectic_without_damping():
    dt, _, k, m = random_parameters(1000, seed=1)
    A, _ = transition(dt, torch.zeros_like(dt), k, m)
    torch.testing.assert_close(torch.linalg.det(A), torch.ones_like(dt), rtol=0, atol=1e-12)


def test_transition_matrix_is_one_step_of_the_reference_scan():
    dt, gamma, k, m = random_parameters(6, seed=2)
    state = torch.randn(3, 6, 2, dtype=torch.float64)
    f = torch.randn(3, 1, 6, dtype=torch.float64)
    qp, _ = scan_ref(f, dt, gamma, k, m, state)
    A, b = transition(dt, gamma, k, m)  # (6, 2, 2), (6, 2)
    expected = torch.einsum("dij,bdj->bdi", A, state) + b * f[:, 0, :, None]
    torch.testing.assert_close(qp[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_shadow_energy_is_conserved_to_round_off_over_100k_steps():
    # γ = 0, f = 0, float64; evaluated with scan_chunked (vectorized: 10^5 steps in well under
    # a second), whose agreement with scan_ref is tested in test_scan.py.
    dt, _, k, m = random_parameters(8, seed=3)
    L = 100_000
    f = torch.zeros(1, L, 8, dtype=torch.float64)
    state = torch.randn(1, 8, 2, dtype=torch.float64)
    qp, _ = scan_chunked(f, dt, torch.zeros_like(dt), k, m, state, chunk_size=256)
    h0 = shadow_energy(state, dt, k, m)  # (1, 8)
    drift = ((shadow_energy(qp, dt, k, m) - h0).abs() / h0).max().item()
    assert drift < 1e-10, f"relative shadow-energy drift {drift:.1e} over {L} steps"
    # the plain energy H is not conserved by the integrator: it oscillates
    h = energy_terms(qp, f, dt, torch.zeros_like(dt), k, m, state).energy
    assert (h.amax(1) - h.amin(1)).max() > 1e3 * drift * h0.max()


def test_shadow_energy_balance_is_exact_with_forcing_and_damping():
    dt, gamma, k, m = random_parameters(5, seed=4)
    f = torch.randn(2, 300, 5, dtype=torch.float64)
    state = torch.randn(2, 5, 2, dtype=torch.float64)
    qp, _ = scan_ref(f, dt, gamma, k, m, state)
    terms = energy_terms(qp, f, dt, gamma, k, m, state)
    previous = torch.cat((shadow_energy(state, dt, k, m)[:, None], terms.shadow_energy[:, :-1]), 1)
    balance = terms.shadow_energy - previous - terms.shadow_work + terms.dissipated
    scale = terms.shadow_energy.abs().max()
    assert balance.abs().max() < 1e-12 * scale
    # and the plain energy's balance closes through its residual, by definition, with a
    # residual that is a small part of the energy that flows
    assert (terms.dissipated >= 0).all()
    assert terms.residual.abs().mean() < terms.work.abs().mean()


def test_no_damping_means_no_dissipation():
    dt, _, k, m = random_parameters(4, seed=5)
    f = torch.randn(2, 50, 4, dtype=torch.float64)
    zero = torch.zeros_like(dt)
    qp, _ = scan_ref(f, dt, zero, k, m)
    terms = energy_terms(qp, f, dt, zero, k, m)
    assert terms.dissipated.abs().max() == 0


def test_energy_residual_shrinks_like_dt_squared():
    # the residual is the integrator's: halving Δ (and doubling the steps) cuts it about 4x
    k = m = torch.ones(1, dtype=torch.float64)
    state = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    worst = []
    for dt in (0.1, 0.05):
        steps = round(2 * math.pi / dt)
        f = torch.zeros(1, steps, 1, dtype=torch.float64)
        dts = torch.full((1,), dt, dtype=torch.float64)
        qp, _ = scan_ref(f, dts, torch.zeros(1, dtype=torch.float64), k, m, state)
        terms = energy_terms(qp, f, dts, torch.zeros_like(dts), k, m, state)
        worst.append((terms.energy - 0.5).abs().max().item())
    assert worst[1] == pytest.approx(worst[0] / 4, rel=0.1)
