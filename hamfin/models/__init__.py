"""Model zoo: one ``ForecastNet`` harness, four sequence mixers.

``build_model(name, config, n_features=...)`` is the registry (Python callables, no class paths
in strings). Names: ``hmld`` (``HamiltonianSeq``), ``lstm``, ``transformer``,
``leapfrog-attn``.
"""

from __future__ import annotations

from collections.abc import Callable

from hamfin.models.leapfrog import LeapfrogBlock
from hamfin.models.mixers import CausalAttentionMixer, HMLDMixer, LSTMMixer
from hamfin.models.net import (
    Block,
    ForecastNet,
    ForecastOutput,
    ModelConfig,
    momentum_energy,
)


class HamiltonianSeq(ForecastNet):
    """Stacked HML-D blocks (norm → HML-D → gated MLP, residual) with the three heads."""

    def __init__(self, config: ModelConfig, n_features: int) -> None:
        super().__init__(config, n_features, lambda c: Block(c, HMLDMixer(c)))


class LSTMSeq(ForecastNet):
    """The same harness with an LSTM mixer."""

    def __init__(self, config: ModelConfig, n_features: int) -> None:
        super().__init__(config, n_features, lambda c: Block(c, LSTMMixer(c)))


class TransformerSeq(ForecastNet):
    """The same harness with causal multi-head attention (SDPA, RoPE)."""

    def __init__(self, config: ModelConfig, n_features: int) -> None:
        super().__init__(config, n_features, lambda c: Block(c, CausalAttentionMixer(c)))


class LeapfrogAttentionSeq(ForecastNet):
    """The same harness whose blocks are leapfrog steps with attention as the force."""

    uses_momentum = True

    def __init__(self, config: ModelConfig, n_features: int) -> None:
        super().__init__(config, n_features, LeapfrogBlock)


MODELS: dict[str, Callable[[ModelConfig, int], ForecastNet]] = {
    "hmld": HamiltonianSeq,
    "lstm": LSTMSeq,
    "transformer": TransformerSeq,
    "leapfrog-attn": LeapfrogAttentionSeq,
}
MODEL_NAMES = tuple(MODELS)
ENERGY_MODELS = frozenset({"hmld"})  # models whose energy goes into FORECASTS.energy


def build_model(name: str, config: ModelConfig, *, n_features: int) -> ForecastNet:
    """Return the model ``name`` (one of ``MODEL_NAMES``) for ``n_features`` inputs per bar."""
    if name not in MODELS:
        message = f"unknown model '{name}'; expected one of {', '.join(MODEL_NAMES)}"
        raise ValueError(message)
    return MODELS[name](config, n_features)


__all__ = [
    "ENERGY_MODELS",
    "MODELS",
    "MODEL_NAMES",
    "Block",
    "ForecastNet",
    "ForecastOutput",
    "HamiltonianSeq",
    "LSTMSeq",
    "LeapfrogAttentionSeq",
    "ModelConfig",
    "TransformerSeq",
    "build_model",
    "momentum_energy",
]
