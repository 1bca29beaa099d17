"""``ForecastSystem``: a thin LightningModule over a plain ``ForecastNet`` — the three losses,
per-stage metrics, optimizer — plus the energy-monitor callback and ``predict_rows``.

Losses on the scored positions (weights ``w``) of each window, in standardized units:

    return     MSE(r̂, r)
    direction  BCE(σ(ℓ), 1[r > 0])
    volatility QLIKE:  s/ĥ + log ĥ  with s = v², ĥ = exp(2·log v̂)   (Patton's QLIKE minus
               terms free of the forecast; minimized at ĥ = E[s])
               or Gaussian NLL of the forward return: ½(r²/ĥ + log ĥ)

``total = w_r·return + w_d·direction + w_v·volatility``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from hamfin.metrics import auc
from hamfin.models import ForecastNet, ModelConfig, build_model, momentum_energy


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and trainer settings."""

    seed: int = 0
    max_epochs: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-2
    gradient_clip: float = 1.0
    patience: int = 2  # early stopping on val_loss, in epochs
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    accelerator: str = "auto"  # "cpu", "gpu"/"cuda", "auto"
    devices: int = 1
    strategy: str = "auto"  # "ddp" for multi-process (gloo on CPU)
    checkpoint_every_n_steps: int = 25  # mid-epoch checkpoints (for --resume)
    return_weight: float = 1.0
    direction_weight: float = 1.0
    volatility_weight: float = 0.5
    volatility_loss: Literal["qlike", "gaussian_nll"] = "qlike"
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class ForecastSystem(L.LightningModule):
    """Training, validation and test steps around ``build_model(model_name, model_config)``."""

    def __init__(
        self,
        model_name: str,
        model_config: ModelConfig,
        train_config: TrainConfig,
        *,
        n_features: int,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.train_config = train_config
        self.model: ForecastNet = build_model(model_name, model_config, n_features=n_features)
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, x: Tensor, *, return_energy: bool = False):
        return self.model(x, return_energy=return_energy)

    def losses(self, batch) -> dict[str, Tensor]:
        """Return the three weighted-mean losses and ``loss`` (their weighted sum)."""
        x, y, w = batch  # (B, L, F), (B, L, 3), (B, L)
        out = self.model(x)
        r, direction, v = y.unbind(-1)
        cfg = self.train_config
        mse = _weighted_mean((out.predicted_return.float() - r) ** 2, w)
        bce = _weighted_mean(
            nn.functional.binary_cross_entropy_with_logits(
                out.direction_logit.float(), direction, reduction="none"
            ),
            w,
        )
        log_h = 2 * out.log_volatility.float()  # log of the predicted variance
        observed = v**2 if cfg.volatility_loss == "qlike" else r**2
        vol = _weighted_mean(observed * torch.exp(-log_h) + log_h, w)
        if cfg.volatility_loss == "gaussian_nll":
            vol = 0.5 * vol
        total = cfg.return_weight * mse + cfg.direction_weight * bce + cfg.volatility_weight * vol
        return {"loss": total, "return": mse, "direction": bce, "volatility": vol, "out": out}

    def training_step(self, batch, batch_idx: int) -> Tensor:
        parts = self.losses(batch)
        self.log("train_loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True)
        return parts["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        parts = self.losses(batch)
        weights = batch[2]
        n = int(weights.sum())
        self.log("val_loss", parts["loss"], on_epoch=True, batch_size=n, sync_dist=True)
        for name in ("return", "direction", "volatility"):
            self.log(f"val_{name}_loss", parts[name], on_epoch=True, batch_size=n, sync_dist=True)
        keep = weights > 0
        prob = torch.sigmoid(parts["out"].direction_logit.float())[keep]
        self._val_outputs.append((prob.detach().cpu(), batch[1][..., 1][keep].cpu(), keep.sum()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        prob = torch.cat([o[0] for o in self._val_outputs]).numpy()
        label = torch.cat([o[1] for o in self._val_outputs]).numpy()
        self._val_outputs.clear()
        value = auc(label > 0.5, prob)
        self.log("val_auc", float(0.5 if np.isnan(value) else value), sync_dist=True)
        self.log("val_accuracy", float(np.mean((prob > 0.5) == (label > 0.5))), sync_dist=True)

    def configure_optimizers(self):
        cfg = self.train_config
        return torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class EnergyMonitor(L.Callback):
    """Log per-layer mixer energy and the momentum–point-perplexity energy on validation.

    On the first validation batch of each epoch: ``energy/layer{i}`` (mean over bars of the
    layer's energy, HML-D: channel-mean Hamiltonian H_t), ``mpp_energy_mean`` and
    ``mpp_energy_cv`` (E_t = ½‖h_t − h_{t−1}‖²·PPL_t of the final hidden state, with PPL_t the
    inverse probability given to the realized direction).
    """

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if batch_idx != 0 or trainer.sanity_checking:
            return
        x, y, _ = batch
        with torch.no_grad():
            out = pl_module.model(x, return_energy=True)
        for i in range(out.energy.shape[-1]):
            pl_module.log(f"energy/layer{i}", out.energy[..., i].float().mean(), sync_dist=True)
        prob_up = torch.sigmoid(out.direction_logit.float())
        realized = torch.where(y[..., 1] > 0.5, prob_up, 1 - prob_up)
        energy = momentum_energy(out.hidden.float(), realized)
        mean = energy.mean()
        pl_module.log("mpp_energy_mean", mean, sync_dist=True)
        pl_module.log("mpp_energy_cv", energy.std() / mean.clamp_min(1e-12), sync_dist=True)


@torch.no_grad()
def predict_rows(model: ForecastNet, windows, scales, *, batch_size: int = 256) -> dict:
    """Forecast the scored rows of a ``WindowSet`` with a plain model (no trainer).

    Returns
    -------
    dict
        ``rows`` (n,) int, ``predicted_return``, ``direction_prob``, ``predicted_volatility``
        (n,) in natural units, ``energy`` (n, n_layers), rows sorted in time.
    """
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("rows", "ret", "prob", "logv", "energy")}
    device = next(model.parameters()).device
    for lo in range(0, len(windows), batch_size):
        idx = range(lo, min(lo + batch_size, len(windows)))
        x = torch.stack([windows[i][0] for i in idx]).to(device)
        w = torch.stack([windows[i][2] for i in idx])
        rows = torch.stack([windows.rows(i) for i in idx])
        out = model(x, return_energy=True)
        keep = w > 0
        parts["rows"].append(rows[keep])
        parts["ret"].append(out.predicted_return.float().cpu()[keep])
        parts["prob"].append(torch.sigmoid(out.direction_logit.float()).cpu()[keep])
        parts["logv"].append(out.log_volatility.float().cpu()[keep])
        parts["energy"].append(out.energy.float().cpu()[keep])
    if not parts["rows"]:
        empty = np.empty(0)
        return {
            "rows": empty.astype(np.int64),
            "predicted_return": empty,
            "direction_prob": empty,
            "predicted_volatility": empty,
            "energy": np.empty((0, model.config.n_layers)),
        }
    cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
    order = np.argsort(cat["rows"], kind="stable")
    return {
        "rows": cat["rows"][order].astype(np.int64),
        "predicted_return": cat["ret"][order].astype(np.float64) * scales.return_scale,
        "direction_prob": cat["prob"][order].astype(np.float64),
        "predicted_volatility": np.exp(cat["logv"][order].astype(np.float64))
        * scales.volatility_scale,
        "energy": cat["energy"][order].astype(np.float64),
    }
