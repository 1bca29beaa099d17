"""Sequence mixers, one per model family; each maps (B, L, d) → (B, L, d) causally.

- ``HMLDMixer``: the HML-D layer of ``hamfin.core`` (conformal leapfrog oscillators; energy per
  bar = mean over channels of the Hamiltonian H_t).
- ``LSTMMixer``: one ``nn.LSTM`` layer.
- ``CausalAttentionMixer``: multi-head self-attention with a causal mask through
  ``scaled_dot_product_attention`` and rotary position embeddings (RoPE) on queries and keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hamfin.core import HMLD, HMLDConfig
from hamfin.models.net import Mixer, ModelConfig


class HMLDMixer(Mixer):
    """HML-D layer as a mixer; its energy is the channel-mean Hamiltonian H_t, shape (B, L)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layer = HMLD(
            HMLDConfig(
                d_model=config.d_model,
                d_state=config.d_state,
                mode=config.hmld_mode,
                chunk_size=config.chunk_size,
            )
        )

    def forward(self, x: Tensor, *, return_energy: bool = False) -> tuple[Tensor, Tensor | None]:
        if not return_energy:
            y, _ = self.layer(x)
            return y, None
        y, _, terms = self.layer(x, return_energy=True)
        return y, terms.energy.mean(dim=-1)  # (B, L, D) -> (B, L)


class LSTMMixer(Mixer):
    """A single-layer LSTM of width d (no energy)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.d_model, config.d_model, batch_first=True)

    def forward(self, x: Tensor, *, return_energy: bool = False) -> tuple[Tensor, Tensor | None]:
        # The LSTM runs in fp32 under bf16 autocast: oneDNN's CPU LSTM rejects bf16 at small
        # widths ("could not create a primitive descriptor"), and its state is a recurrence.
        with torch.autocast(device_type=x.device.type, enabled=False):
            full = x if x.dtype in (torch.float32, torch.float64) else x.float()
            y, _ = self.lstm(full)
        return y.to(x.dtype), None


def rotary(x: Tensor, base: float = 10_000.0) -> Tensor:
    """Apply rotary position embeddings to x of shape (B, heads, L, head_dim) (even head_dim)."""
    _, _, length, dim = x.shape
    half = dim // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # (L, half)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalAttentionMixer(Mixer):
    """Causal multi-head self-attention with RoPE (no energy)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads or (config.d_model // config.n_heads) % 2:
            message = (
                f"d_model={config.d_model} must split into n_heads={config.n_heads} heads "
                "of even size"
            )
            raise ValueError(message)
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: Tensor, *, return_energy: bool = False) -> tuple[Tensor, Tensor | None]:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, L, head_dim)
        y = nn.functional.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, length, d)), None
