"""Leapfrog attention (after seeds/hllm_spec.txt): each layer is one kick–drift–kick step on a
(q, p) residual stream, with attention as the force.

Per layer l, with a learned step Δ_l ∈ (0, 1) and stiffness κ_l ≥ 0 (per channel):

    F_l(q) = −κ_l ⊙ q + Attn_l(RMSNorm(q)) + MLP_l(RMSNorm(q))   force: −∇V plus attention
    p ← p + (Δ_l/2) F_l(q)                                      half kick
    q ← q + Δ_l p                                               drift
    p ← p + (Δ_l/2) F_l(q)                                      half kick (force re-evaluated)

``q`` is the hidden state the heads read. Attention and MLP forces are not gradients of a
potential, so energy is not conserved; the per-bar energy reported for diagnostics is
``H = mean_i(½ p_i² + ½ κ_i q_i²)`` after the step. The mixer is the same causal attention as
the Transformer baseline; only the integration of the block differs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hamfin.models.mixers import CausalAttentionMixer
from hamfin.models.net import GatedMLP, ModelConfig, RMSNorm


class LeapfrogBlock(nn.Module):
    """One leapfrog step; forward(q, p) → (q, p, energy (B, L) or None)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_attn = RMSNorm(d)
        self.attention = CausalAttentionMixer(config)
        self.norm_mlp = RMSNorm(d)
        self.mlp = GatedMLP(d, config.mlp_ratio, config.dropout)
        dt = min(max(config.leapfrog_dt, 1e-3), 1 - 1e-3)
        self.dt_logit = nn.Parameter(torch.tensor(math.log(dt / (1 - dt))))
        self.stiffness_raw = nn.Parameter(torch.full((d,), -3.0))  # softplus ≈ 0.05

    def force(self, q: Tensor) -> Tensor:
        """Return F(q) of shape (B, L, d)."""
        attention, _ = self.attention(self.norm_attn(q))
        stiffness = nn.functional.softplus(self.stiffness_raw)
        return -stiffness * q + attention + self.mlp(self.norm_mlp(q))

    def forward(
        self, q: Tensor, p: Tensor | None, *, return_energy: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        if p is None:
            p = torch.zeros_like(q)
        dt = torch.sigmoid(self.dt_logit)
        p = p + 0.5 * dt * self.force(q)  # half kick
        q = q + dt * p  # drift
        p = p + 0.5 * dt * self.force(q)  # half kick
        energy = None
        if return_energy:
            stiffness = nn.functional.softplus(self.stiffness_raw)
            energy = (0.5 * p.pow(2) + 0.5 * stiffness * q.pow(2)).mean(-1)  # (B, L)
        return q, p, energy
