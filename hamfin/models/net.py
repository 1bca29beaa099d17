"""The shared forecasting network: input projection, residual blocks around a sequence mixer,
three heads.

Every model family (HML-D, LSTM, causal Transformer, leapfrog attention) is a ``ForecastNet``;
they differ only in the block's sequence mixer (and, for leapfrog attention, in how the block
integrates it). Per bar ``t`` of a window ``x`` (B, L, F) the net predicts

    ŷ_t = (return_t, direction_logit_t, log_vol_t)

from ``x_{≤t}`` only (every mixer is causal; norms act per position), in the standardized
units the data module defines (return / σ_r, log(vol / σ_v)).

Block (pre-norm, residual):

    h ← h + Mixer(RMSNorm(h))
    h ← h + GatedMLP(RMSNorm(h)),   GatedMLP(u) = W₂ (SiLU(W₁ u) ⊙ W₃ u)

A mixer maps (B, L, d) → (B, L, d) and may return a per-bar energy (B, L) for diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

HMLDMode = Literal["dissipative", "conservative", "selective"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a forecasting net (shared by every mixer)."""

    d_model: int = 32  # width of the residual stream
    n_layers: int = 2
    mlp_ratio: int = 2  # hidden width of the gated MLP = mlp_ratio * d_model
    dropout: float = 0.0
    d_state: int = 32  # HML-D: number of oscillators (channels) per layer
    hmld_mode: HMLDMode = "dissipative"
    chunk_size: int = 64  # HML-D chunked scan
    n_heads: int = 4  # attention mixers
    leapfrog_dt: float = 0.5  # leapfrog attention: initial step size per layer


@dataclass
class ForecastOutput:
    """What ``ForecastNet.forward`` returns; every tensor is per bar of the window."""

    predicted_return: Tensor  # (B, L) standardized return
    direction_logit: Tensor  # (B, L) logit of P(return > 0)
    log_volatility: Tensor  # (B, L) log of standardized volatility
    hidden: Tensor  # (B, L, d_model) final normed hidden state (for diagnostics)
    energy: Tensor | None  # (B, L, n_layers) mixer energy per layer, None if not requested


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension (per position, so it is causal)."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * scale * self.weight


class GatedMLP(nn.Module):
    """SwiGLU feed-forward: ``W₂ (SiLU(W₁ u) ⊙ W₃ u)``."""

    def __init__(self, d: int, ratio: int, dropout: float) -> None:
        super().__init__()
        hidden = ratio * d
        self.gate = nn.Linear(d, hidden)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: Tensor) -> Tensor:
        return self.down(self.dropout(nn.functional.silu(self.gate(u)) * self.up(u)))


class Mixer(nn.Module):
    """Interface of a sequence mixer: (B, L, d) → ((B, L, d), energy (B, L) or None)."""

    def forward(self, x: Tensor, *, return_energy: bool = False) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


class Block(nn.Module):
    """Pre-norm residual block: mixer then gated MLP. ``p`` (momentum) is passed through."""

    def __init__(self, config: ModelConfig, mixer: Mixer) -> None:
        super().__init__()
        self.norm_mix = RMSNorm(config.d_model)
        self.mixer = mixer
        self.norm_mlp = RMSNorm(config.d_model)
        self.mlp = GatedMLP(config.d_model, config.mlp_ratio, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, h: Tensor, p: Tensor | None, *, return_energy: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        mixed, energy = self.mixer(self.norm_mix(h), return_energy=return_energy)  # (B, L, d)
        h = h + self.dropout(mixed)
        h = h + self.dropout(self.mlp(self.norm_mlp(h)))
        return h, p, energy


BlockFactory = Callable[[ModelConfig], nn.Module]


class ForecastNet(nn.Module):
    """Input projection → ``n_layers`` blocks → final norm → heads (return, direction, log-vol).

    Parameters
    ----------
    config : ModelConfig
    n_features : int
        Features per bar (F).
    make_block : callable
        ``make_block(config) -> nn.Module`` with ``forward(h, p, *, return_energy)`` returning
        ``(h, p, energy)``; the only thing model families change.
    """

    uses_momentum: bool = False  # True for blocks that carry a (q, p) residual stream

    def __init__(self, config: ModelConfig, n_features: int, make_block: BlockFactory) -> None:
        super().__init__()
        self.config = config
        self.n_features = n_features
        self.embed = nn.Linear(n_features, config.d_model)
        self.blocks = nn.ModuleList(make_block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, 3)

    def forward(self, x: Tensor, *, return_energy: bool = False) -> ForecastOutput:
        """Forecast every bar of ``x``.

        Parameters
        ----------
        x : Tensor of shape (B, L, F)
        return_energy : bool
            Also return the per-layer mixer energy (B, L, n_layers).
        """
        h = self.embed(x)  # (B, L, d)
        p = torch.zeros_like(h) if self.uses_momentum else None
        energies = []
        for block in self.blocks:
            h, p, energy = block(h, p, return_energy=return_energy)
            if return_energy:
                energies.append(energy if energy is not None else torch.zeros_like(h[..., 0]))
        hidden = self.norm(h)  # (B, L, d)
        out = self.head(hidden)  # (B, L, 3)
        return ForecastOutput(
            predicted_return=out[..., 0],
            direction_logit=out[..., 1],
            log_volatility=out[..., 2],
            hidden=hidden,
            energy=torch.stack(energies, dim=-1) if return_energy else None,
        )


def momentum_energy(hidden: Tensor, prob_realized: Tensor) -> Tensor:
    """Return the momentum–point-perplexity energy ``E_t = ½‖h_t − h_{t−1}‖²·PPL_t``.

    ``PPL_t = 1 / prob_realized_t``, the probability the model gave the direction that
    happened (seeds/momentum_point_perplexity_paper.txt). Shapes: hidden (B, L, d),
    prob_realized (B, L); returns (B, L − 1) for t = 1..L−1.
    """
    velocity = hidden[:, 1:] - hidden[:, :-1]  # (B, L-1, d)
    kinetic = 0.5 * velocity.pow(2).sum(-1)
    return kinetic / prob_realized[:, 1:].clamp_min(1e-6)
