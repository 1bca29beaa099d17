"""Energy diagnostics of the HML-D oscillators (HMLD.md, "Diagnostics a user can read").

Per channel, with Δ the step, e = exp(−γΔ/2), s_{t−1} = (q₀, p₀) → s_t = (q₁, p₁):

- energy          H_t = p²/(2m) + k q²/2
- shadow energy   H̃_t = p²/(2m) + (k/2)(1 − Δ²k/(4m)) q², conserved exactly by the leapfrog when
                  γ = 0 and f = 0 (evaluated with the Δ of step t)
- work            f_t·(q₁ − q₀), the forcing's work over the step (force × displacement)
- shadow work     (1 − Δ²k/(4m))·work, the forcing's work on H̃
- dissipated      (1 − e²)(p₀² + p₃²)/(2m), the kinetic energy the two half dampings remove
                  (p₃ the momentum before the final half damping)
- residual        H_t − H_{t−1} − work + dissipated, the integrator's own contribution

The shadow balance H̃(s_t) − H̃(s_{t−1}) = shadow_work − dissipated holds exactly (to round-off)
for every step; the residual of H is the leapfrog's energy error, O(Δ²) and bounded.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["EnergyTerms", "energy_terms", "hamiltonian", "shadow_energy", "transition"]


class EnergyTerms(NamedTuple):
    """Per-step, per-channel energy diagnostics, each (B, L, D)."""

    energy: Tensor
    shadow_energy: Tensor
    work: Tensor
    shadow_work: Tensor
    dissipated: Tensor
    residual: Tensor


def hamiltonian(qp: Tensor, k: Tensor, m: Tensor) -> Tensor:
    """Return H = p²/(2m) + k q²/2 of states ``qp`` (..., D, 2) as (..., D)."""
    q, p = qp[..., 0], qp[..., 1]
    return p * p / (2 * m) + 0.5 * k * q * q


def shadow_energy(qp: Tensor, dt: Tensor, k: Tensor, m: Tensor) -> Tensor:
    """Return H̃ = p²/(2m) + (k/2)(1 − Δ²k/(4m)) q² of ``qp`` (..., D, 2) as (..., D).

    ``dt`` broadcasts against (..., D). The leapfrog conserves H̃ exactly when γ = 0 and f = 0.
    """
    q, p = qp[..., 0], qp[..., 1]
    return p * p / (2 * m) + 0.5 * k * (1 - dt * dt * k / (4 * m)) * q * q


def energy_terms(qp, f, dt, gamma, k, m, state=None) -> EnergyTerms:
    """Compute the energy diagnostics of a scan's states.

    Parameters
    ----------
    qp : Tensor
        States after each step, (B, L, D, 2), as returned by ``scan``.
    f : Tensor
        Forcing, (B, L, D).
    dt, gamma : Tensor
        Step and damping, broadcastable to (B, L, D).
    k, m : Tensor
        Stiffness and mass, (D,).
    state : Tensor, optional
        The state before the first step, (B, D, 2); zeros when None.

    Returns
    -------
    EnergyTerms
        Each field (B, L, D).
    """
    B, L, D, _ = qp.shape
    if state is None:
        state = qp.new_zeros((B, D, 2))
    prev = torch.cat((state[:, None].to(qp.dtype), qp[:, :-1]), dim=1)  # (B, L, D, 2)
    q0, p0, q1 = prev[..., 0], prev[..., 1], qp[..., 0]
    h = 0.5 * dt
    e = torch.exp(-h * gamma)
    p3 = e * p0 + h * (2 * f - k * (q0 + q1))  # momentum before the final half damping
    dissipated = (1 - e * e) * (p0 * p0 + p3 * p3) / (2 * m)
    work = f * (q1 - q0)
    shadow_work = (1 - dt * dt * k / (4 * m)) * work
    energy = hamiltonian(qp, k, m)
    residual = energy - hamiltonian(prev, k, m) - work + dissipated
    return EnergyTerms(
        energy=energy,
        shadow_energy=shadow_energy(qp, dt, k, m).expand(B, L, D),
        work=work,
        shadow_work=shadow_work.expand(B, L, D),
        dissipated=dissipated.expand(B, L, D),
        residual=residual,
    )


def transition(dt, gamma, k, m) -> tuple[Tensor, Tensor]:
    """Return the step as s_t = A s_{t−1} + b f_t: ``A`` (..., 2, 2) and ``b`` (..., 2).

    With a = Δ²k/(2m) and e = exp(−γΔ/2) (HMLD.md)::

        A = [[1 − a, Δe/m], [−e(Δk/2)(2 − a), e²(1 − a)]],  b = [Δ²/(2m), eΔ(1 − a/2)]

    and det A = exp(−γΔ). Arguments broadcast elementwise.
    """
    dt, gamma, k, m = torch.broadcast_tensors(*(torch.as_tensor(x) for x in (dt, gamma, k, m)))
    a = dt * dt * k / (2 * m)
    e = torch.exp(-0.5 * gamma * dt)
    A = torch.stack(
        (
            torch.stack((1 - a, dt * e / m), dim=-1),
            torch.stack((-e * (dt * k / 2) * (2 - a), e * e * (1 - a)), dim=-1),
        ),
        dim=-2,
    )
    b = torch.stack((dt * dt / (2 * m), e * dt * (1 - a / 2)), dim=-1)
    return A, b
