"""The HML-D layer: a bank of damped, forced oscillators as a sequence mixer.

x_t (B, L, d_model) → forcing f_t = W_in x_t (B, L, D) → per-channel (q, p) evolved by the
conformal leapfrog of HMLD.md (``hamfin.core.scan``) → y_t = W_out [q_t, p_t] (B, L, d_model).

Every parameter value gives a stable map (HMLD.md: stable iff Δ²k/m < 4 and γ ≥ 0):

    m = softplus(·) + ε            mass, 1 at init
    k = softplus(·) + ε            stiffness, 1 at init
    Δ = 2·s·sqrt(m/k)·sigmoid(·)   so Δ²k/m = 4 s² sigmoid² < 4 (s = 0.99 keeps a margin for
                                   round-off); at γ = 0 the phase advance is θ = 2 asin(s·sigmoid)
    γ = softplus(·) ≥ 0            damping; the state's modulus shrinks by e = exp(−γΔ/2) a step

Modes: ``conservative`` (γ ≡ 0: the symplectic HML), ``dissipative`` (γ learned per channel,
default), ``selective`` (Δ_t and γ_t computed from x_t through a low-rank projection plus a
per-channel bias, like Mamba's selective Δ).

Initialization spreads Δ (hence frequencies) log-uniformly over [dt_min, dt_max] and half-lives
log-uniformly over [half_life_min, half_life_max] steps, so long memory is there from the start.
With fixed Δ the shadow energy never increases (f = 0), which bounds the state for every parameter
value. With input-dependent Δ_t (selective, ``selective_dt``) each step is stable but switching
between steps can pump energy (parametric excitation); γ_t-only selectivity keeps the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamfin.core.energy import EnergyTerms, energy_terms
from hamfin.core.scan import scan

__all__ = ["HMLD", "HMLDConfig"]

_MODES = ("conservative", "dissipative", "selective")
_EPS = 1e-3  # floor of m and k
_STEP_MARGIN = 0.99  # s above: Δ²k/m ≤ 4·0.99² < 4 whatever sigmoid rounds to


@dataclass(frozen=True)
class HMLDConfig:
    """Configuration of one HML-D layer.

    Attributes
    ----------
    d_model : int
        Width of the input and the output.
    d_state : int or None
        Number of oscillators D; ``d_model`` when None.
    mode : str
        "conservative", "dissipative" (default) or "selective".
    chunk_size : int
        Chunk length of the scan.
    dt_min, dt_max : float
        Range of the initial step Δ (at m = k = 1), sampled log-uniformly per channel.
    half_life_min, half_life_max : float
        Range of the initial memory half-life in steps, sampled log-uniformly per channel.
    dt_rank : int or None
        Rank of the selective projection; ceil(d_model / 16) when None.
    selective_dt : bool
        In selective mode, make Δ_t input-dependent too (else only γ_t).
    bias : bool
        Biases in the input and output projections.
    """

    d_model: int
    d_state: int | None = None
    mode: str = "dissipative"
    chunk_size: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1.0
    half_life_min: float = 10.0
    half_life_max: float = 10_000.0
    dt_rank: int | None = None
    selective_dt: bool = True
    bias: bool = True

    def __post_init__(self):
        if self.d_state is None:
            object.__setattr__(self, "d_state", self.d_model)
        if self.dt_rank is None:
            object.__setattr__(self, "dt_rank", max(1, math.ceil(self.d_model / 16)))
        problems = []
        if self.mode not in _MODES:
            problems.append(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.d_model < 1 or self.d_state < 1 or self.dt_rank < 1 or self.chunk_size < 1:
            problems.append("d_model, d_state, dt_rank and chunk_size must be >= 1")
        if not 0 < self.dt_min <= self.dt_max < 2 * _STEP_MARGIN:
            problems.append(f"need 0 < dt_min <= dt_max < {2 * _STEP_MARGIN} (m = k = 1)")
        if not 0 < self.half_life_min <= self.half_life_max:
            problems.append("need 0 < half_life_min <= half_life_max")
        if problems:
            raise ValueError("HMLDConfig: " + "; ".join(problems))


def _inverse_softplus(y: Tensor) -> Tensor:
    """Return x with softplus(x) = y (y > 0), without overflow for large y."""
    return y + torch.log(-torch.expm1(-y))


def _log_uniform(n: int, low: float, high: float) -> Tensor:
    """Draw n values log-uniformly in [low, high] (float64)."""
    u = torch.rand(n, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


class HMLD(nn.Module):
    """One HML-D layer: (B, L, d_model) → (B, L, d_model), with a carried state (B, D, 2)."""

    def __init__(self, config: HMLDConfig):
        super().__init__()
        self.config = config
        D = config.d_state
        self.in_proj = nn.Linear(config.d_model, D, bias=config.bias)
        self.out_proj = nn.Linear(2 * D, config.d_model, bias=config.bias)
        one = torch.full((D,), 1.0 - _EPS, dtype=torch.float64)
        self.mass_raw = nn.Parameter(_inverse_softplus(one).float())
        self.stiffness_raw = nn.Parameter(_inverse_softplus(one).float())
        # Δ at m = k = 1 is 2·s·sigmoid(raw): invert for the sampled steps.
        dt = _log_uniform(D, config.dt_min, config.dt_max)
        self.dt_raw = nn.Parameter(torch.logit(dt / (2 * _STEP_MARGIN)).float())
        if config.mode != "conservative":
            # |eigenvalue| = exp(−γΔ/2) per step, so half-life T steps ⇔ γ = 2 ln 2 / (Δ T).
            half_life = _log_uniform(D, config.half_life_min, config.half_life_max)
            gamma = 2 * math.log(2) / (dt * half_life)
            self.gamma_raw = nn.Parameter(_inverse_softplus(gamma).float())
        else:
            self.register_buffer("gamma_zero", torch.zeros(D), persistent=False)
        if config.mode == "selective":
            r = config.dt_rank
            self.select_proj = nn.Linear(config.d_model, r, bias=False)
            self.gamma_proj = nn.Linear(r, D, bias=False)
            nn.init.uniform_(self.gamma_proj.weight, -(r**-0.5), r**-0.5)
            if config.selective_dt:
                self.dt_proj = nn.Linear(r, D, bias=False)
                nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (dt, gamma, k, m) for input ``x`` (B, L, d_model).

        ``dt`` and ``gamma`` are (D,) or, where selective, (B, L, D); ``k`` and ``m`` are (D,).
        """
        m = F.softplus(self.mass_raw) + _EPS  # (D,)
        k = F.softplus(self.stiffness_raw) + _EPS  # (D,)
        dt_scale = 2 * _STEP_MARGIN * torch.sqrt(m / k)  # Δ < dt_scale keeps Δ²k/m < 4
        dt_logit, gamma_raw = self.dt_raw, getattr(self, "gamma_raw", None)
        if self.config.mode == "selective":
            z = self.select_proj(x)  # (B, L, r)
            gamma_raw = gamma_raw + self.gamma_proj(z)  # (B, L, D)
            if self.config.selective_dt:
                dt_logit = dt_logit + self.dt_proj(z)  # (B, L, D)
        dt = dt_scale * torch.sigmoid(dt_logit)
        gamma = self.gamma_zero if gamma_raw is None else F.softplus(gamma_raw)
        return dt, gamma, k, m

    def forward(self, x: Tensor, state: Tensor | None = None, *, return_energy: bool = False):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : Tensor
            Input, (B, L, d_model).
        state : Tensor, optional
            Oscillator state (q, p) before the first step, (B, D, 2); zeros when None.
        return_energy : bool
            Also return the energy diagnostics.

        Returns
        -------
        y : Tensor
            (B, L, d_model).
        final_state : Tensor
            (B, D, 2); pass it back in to continue the sequence (pieces equal the whole).
        energy : EnergyTerms
            Only with ``return_energy``: per step and channel, each (B, L, D).
        """
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(f"HMLD: x must be (B, L, {self.config.d_model}), got {tuple(x.shape)}")
        f = self.in_proj(x)  # (B, L, D)
        dt, gamma, k, m = self.coefficients(x)
        qp, final_state = scan(f, dt, gamma, k, m, state, chunk_size=self.config.chunk_size)
        y = self.out_proj(qp.transpose(-1, -2).flatten(2))  # [q, p] (B, L, 2D) → (B, L, d_model)
        if not return_energy:
            return y, final_state
        terms: EnergyTerms = energy_terms(qp, f, dt, gamma, k, m, state)
        return y, final_state, terms

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Advance one step for streaming: ``x_t`` (B, d_model) → (y_t (B, d_model), state)."""
        y, state = self.forward(x_t[:, None], state)
        return y[:, 0], state
