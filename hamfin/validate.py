"""Synthetic validation of the HML-D core: the copying-memory task and an impulse memory probe.

Copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): K random tokens from an
alphabet of A symbols, L blank steps, a delimiter, then K more blank steps during which the model
must emit the K tokens in order. The loss is cross-entropy on those K positions only; chance
accuracy is 1/A. Sequence length T = K + L + 1 + K; the needed lag is K + L + 1 for every target.

    python -m hamfin.validate copy --length 20 --tokens 3 --alphabet 4 --steps 300
    python -m hamfin.validate copy --length 1000 --model lstm --json copy.json
    python -m hamfin.validate copy --length 100000 --steps 0 --streaming 4096   # eval only
    python -m hamfin.validate probe --length 100000
    python -m hamfin.validate listops --train 2000 --test 500 --max-len 2000 --steps 400

``listops`` trains a classifier on Long Range Arena ListOps expressions generated on the spot
(``hamfin.lra``) and prints the test accuracy with its 95% Wilson interval beside the test set's
majority-class share and chance (0.1).

``--streaming P`` evaluates held-out sequences by feeding them in pieces of P steps and carrying
each layer's state between pieces (training still sees whole sequences). ``probe`` is training
free: an impulse at t = 0 into a conservative (γ = 0) HML-D layer at init must keep its shadow
energy to round-off at t = L; a dissipative layer's energy must decay as exp(−γΔ t), i.e. with
the half-lives it was initialized with.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamfin.core import HMLD, HMLDConfig, scan, shadow_energy, transition
from hamfin.lra import (
    LISTOPS_MODELS,
    POOLINGS,
    ListOpsConfig,
    ListOpsData,
    evaluate_listops,
    generate_listops,
    train_listops,
)
from hamfin.models.net import ModelConfig

__all__ = [
    "CopyModel",
    "CopyModelConfig",
    "CopyTask",
    "copy_batch",
    "evaluate_copy",
    "impulse_probe",
    "main",
    "train_copy",
]

IGNORE = -100  # cross_entropy's ignore_index: no loss on non-target positions
_MODELS = ("hmld", "lstm")
_MODES = ("conservative", "dissipative", "selective")


@dataclass(frozen=True)
class CopyTask:
    """The copying-memory task.

    Attributes
    ----------
    length : int
        Number of blank steps L between the last token and the delimiter.
    tokens : int
        Number of tokens K to remember.
    alphabet : int
        Number of symbols A; the input vocabulary adds a blank (A) and a delimiter (A + 1).
    """

    length: int
    tokens: int = 8
    alphabet: int = 8

    def __post_init__(self):
        if self.length < 0 or self.tokens < 1 or self.alphabet < 2:
            raise ValueError("CopyTask: need length >= 0, tokens >= 1, alphabet >= 2")

    @property
    def blank(self) -> int:
        return self.alphabet

    @property
    def delimiter(self) -> int:
        return self.alphabet + 1

    @property
    def seq_len(self) -> int:
        return 2 * self.tokens + self.length + 1


def copy_batch(task: CopyTask, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw a batch of copy sequences.

    Returns
    -------
    inputs : Tensor
        (B, T) long: K tokens, L blanks, the delimiter, K blanks.
    targets : Tensor
        (B, T) long: ``IGNORE`` everywhere except the last K positions, which hold the K tokens.
    """
    K, T = task.tokens, task.seq_len
    symbols = torch.randint(0, task.alphabet, (batch, K), generator=generator)
    inputs = torch.full((batch, T), task.blank, dtype=torch.long)
    inputs[:, :K] = symbols
    inputs[:, K + task.length] = task.delimiter
    targets = torch.full((batch, T), IGNORE, dtype=torch.long)
    targets[:, T - K :] = symbols
    return inputs, targets


@dataclass(frozen=True)
class CopyModelConfig:
    """Embedding → n_layers residual blocks (sequence mixer + GELU MLP) → linear head.

    Attributes
    ----------
    model : str
        "hmld" (``hamfin.core.HMLD`` mixers) or "lstm" (one ``nn.LSTM`` per block).
    mode : str
        HML-D mode: "conservative", "dissipative" or "selective".
    d_model : int
        Width.
    n_layers : int
        Number of blocks.
    half_life_max : float
        Longest initial HML-D half-life in steps (the task sets it to cover the lag).
    dt_min : float
        Smallest initial HML-D step (lowest frequency ≈ dt_min per step).
    """

    model: str = "hmld"
    mode: str = "dissipative"
    d_model: int = 32
    n_layers: int = 2
    half_life_max: float = 10_000.0
    dt_min: float = 1e-3

    def __post_init__(self):
        if self.model not in _MODELS or self.mode not in _MODES:
            raise ValueError(f"CopyModelConfig: model in {_MODELS}, mode in {_MODES}")
        if self.d_model < 1 or self.n_layers < 1:
            raise ValueError("CopyModelConfig: d_model and n_layers must be >= 1")


class _Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)); the mixer carries a state."""

    def __init__(self, config: CopyModelConfig):
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        if config.model == "hmld":
            self.mixer = HMLD(
                HMLDConfig(
                    d_model=d,
                    mode=config.mode,
                    dt_min=config.dt_min,
                    half_life_max=config.half_life_max,
                    half_life_min=min(10.0, config.half_life_max),
                )
            )
        else:
            self.mixer = nn.LSTM(d, d, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: Tensor, state=None):
        y, state = self.mixer(self.norm1(x), state)  # (B, L, d); HMLD (B, D, 2) / LSTM (h, c)
        x = x + y
        return x + self.mlp(self.norm2(x)), state


class CopyModel(nn.Module):
    """Token sequence (B, T) → logits (B, T, A), with per-block states for streaming."""

    def __init__(self, task: CopyTask, config: CopyModelConfig):
        super().__init__()
        self.embed = nn.Embedding(task.alphabet + 2, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, task.alphabet)

    def forward(self, inputs: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        """Return logits (B, T, A) and the states after the last step (pass back to continue)."""
        x = self.embed(inputs)  # (B, T, d)
        states = states or [None] * len(self.blocks)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block(x, state)
            new_states.append(state)
        return self.head(self.norm(x)), new_states


def _token_accuracy(logits: Tensor, targets: Tensor) -> tuple[float, int]:
    mask = targets != IGNORE
    correct = (logits.argmax(-1)[mask] == targets[mask]).sum().item()
    return correct, int(mask.sum().item())


@torch.no_grad()
def evaluate_copy(
    model: CopyModel,
    task: CopyTask,
    *,
    sequences: int,
    batch: int,
    seed: int,
    streaming: int | None = None,
    device: str = "cpu",
) -> float:
    """Return the token accuracy on ``sequences`` fresh sequences drawn with ``seed``.

    With ``streaming`` = P, each sequence is fed in pieces of P steps with the state carried;
    only the targets' logits are kept, so memory is O(B·P·d) whatever the length.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    for start in range(0, sequences, batch):
        inputs, targets = copy_batch(task, min(batch, sequences - start), generator)
        inputs, targets = inputs.to(device), targets.to(device)
        if streaming is None:
            logits, _ = model(inputs)
        else:
            states, pieces = None, []
            for lo in range(0, task.seq_len, streaming):
                out, states = model(inputs[:, lo : lo + streaming], states)
                pieces.append(out)
            logits = torch.cat(pieces, dim=1)  # (B, T, A)
        c, n = _token_accuracy(logits, targets)
        correct, total = correct + c, total + n
    model.train()
    return correct / total


def train_copy(
    task: CopyTask,
    config: CopyModelConfig,
    *,
    steps: int,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
    shuffle_labels: bool = False,
    log_every: int = 0,
    log=print,
) -> tuple[CopyModel, float]:
    """Train a ``CopyModel`` with AdamW; return it and the last training loss.

    ``shuffle_labels`` permutes the targets across the batch at every step (a null control:
    the labels no longer depend on the inputs, so held-out accuracy must stay near chance).
    """
    torch.manual_seed(seed)
    model = CopyModel(task, config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for step in range(1, steps + 1):
        inputs, targets = copy_batch(task, batch, generator)
        if shuffle_labels:
            targets = targets[torch.randperm(batch, generator=generator)]
        inputs, targets = inputs.to(device), targets.to(device)
        logits, _ = model(inputs)
        K = task.tokens
        loss = F.cross_entropy(logits[:, -K:].flatten(0, 1), targets[:, -K:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if log_every and (step % log_every == 0 or step == steps):
            c, n = _token_accuracy(logits.detach(), targets)
            log(f"step {step:>6}  loss {loss_value:.4f}  token accuracy {c / n:.3f}")
    return model, loss_value


def impulse_probe(length: int, *, d_model: int = 32, seed: int = 0) -> dict:
    """Feed an impulse at t = 0 into HML-D layers at init and measure what is left at t = length.

    Runs in float64. Conservative (γ = 0): the ratio of shadow energy at t = length to t = 0
    (summed over channels) must be 1 to round-off. Dissipative: per channel, the measured log
    energy decay over ``length`` steps is compared with the decay −γΔ·length implied by its
    initial half-life (energy halves every half-life / 2 steps); channels whose predicted energy
    underflows float64 are compared at the last step where it does not.

    Returns
    -------
    dict
        JSON-ready figures.
    """
    torch.manual_seed(seed)
    x = torch.zeros(1, length + 1, d_model, dtype=torch.float64)
    x[0, 0] = torch.randn(d_model, dtype=torch.float64)
    result = {"length": length, "d_model": d_model}
    for mode in ("conservative", "dissipative"):
        layer = HMLD(HMLDConfig(d_model=d_model, mode=mode)).double()
        with torch.no_grad():
            f = F.linear(x, layer.in_proj.weight)  # (1, T, D); no bias: zero forcing after t=0
            dt, gamma, k, m = layer.coefficients(x)
            qp, _ = scan(f, dt, gamma, k, m)  # (1, T, D, 2), the layer's own dispatch
            energy = shadow_energy(qp[0], dt, k, m)  # (T, D)
        start, end = energy[0], energy[length]
        entry = {"state_norm_ratio": (qp[0, length].norm() / qp[0, 0].norm()).item()}
        entry["energy_ratio"] = (end.sum() / start.sum()).item()
        if mode == "conservative":
            entry["max_channel_energy_drift"] = ((end - start).abs() / start).max().item()
        else:
            # Spectral radius ρ of each channel's step matrix: the energy of the impulse decays
            # like ρ^(2t). Oscillatory channels (complex eigenvalues) have ρ = exp(−γΔ/2), the
            # nominal half-life; overdamped ones (real eigenvalues) keep a slower mode, ρ > e.
            A, _ = transition(dt, gamma, k, m)  # (D, 2, 2)
            eigenvalues = torch.linalg.eigvals(A)  # (D, 2) complex
            rho = eigenvalues.abs().max(dim=-1).values  # (D,)
            oscillatory = eigenvalues.imag.abs().max(dim=-1).values > 0
            rate = -2 * torch.log(rho)  # predicted −d(log energy)/dt per channel
            nominal = 2 * math.log(2) / (gamma * dt)  # initial half-life (steps) per channel
            # compare at the last step where the predicted energy stays above 1e-200 · start
            horizon = torch.clamp((200 * math.log(10) / rate).floor(), max=length).long()
            measured = torch.stack(
                [torch.log(energy[h, c] / start[c]) for c, h in enumerate(horizon.tolist())]
            )
            # 1 when the decay follows ρ; oscillatory channels only (in overdamped ones the
            # impulse also excites the fast mode, a one-off drop the rate does not describe)
            ratio = (measured / (-rate * horizon))[oscillatory]
            entry["channels"] = d_model
            entry["channels_oscillatory"] = int(oscillatory.sum().item())
            entry["channels_energy_below_half"] = int((end < 0.5 * start).sum().item())
            entry["nominal_half_life_min"] = nominal.min().item()
            entry["nominal_half_life_max"] = nominal.max().item()
            entry["effective_half_life_max"] = (2 * math.log(2) / rate).max().item()
            entry["oscillatory_effective_over_nominal_max_error"] = (
                ((2 * math.log(2) / rate) / nominal - 1)[oscillatory].abs().max().item()
            )
            entry["log_decay_measured_over_predicted_median"] = ratio.median().item()
            entry["log_decay_measured_over_predicted_min"] = ratio.min().item()
            entry["log_decay_measured_over_predicted_max"] = ratio.max().item()
        result[mode] = entry
    return result


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "positive integer"


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_non_negative.__name__ = "non-negative integer"


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser (sub-commands ``copy``, ``probe`` and ``listops``)."""
    parser = _Parser(prog="python -m hamfin.validate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    copy = sub.add_parser("copy", help="train on the copying-memory task")
    copy.add_argument("--length", type=_non_negative, required=True, help="blank steps L")
    copy.add_argument("--tokens", type=_positive, default=8, help="tokens to copy K")
    copy.add_argument("--alphabet", type=_positive, default=8, help="symbols A (>= 2)")
    copy.add_argument("--model", choices=_MODELS, default="hmld")
    copy.add_argument("--mode", choices=_MODES, default="dissipative")
    copy.add_argument("--steps", type=_non_negative, default=500)
    copy.add_argument("--batch", type=_positive, default=16)
    copy.add_argument("--d-model", type=_positive, default=32)
    copy.add_argument("--n-layers", type=_positive, default=2)
    copy.add_argument("--lr", type=float, default=3e-3)
    copy.add_argument("--seed", type=int, default=0)
    copy.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    copy.add_argument("--eval-sequences", type=_positive, default=256)
    copy.add_argument("--streaming", type=_positive, help="evaluate in pieces of this many steps")
    copy.add_argument("--log-every", type=_positive, default=50)
    copy.add_argument("--json", type=Path, help="write the result here")
    probe = sub.add_parser("probe", help="training-free impulse memory probe")
    probe.add_argument("--length", type=_positive, default=100_000)
    probe.add_argument("--d-model", type=_positive, default=32)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--json", type=Path, help="write the result here")
    listops = sub.add_parser("listops", help="train on LRA ListOps (generated, hamfin.lra)")
    listops.add_argument("--train", type=_positive, default=2000, help="training expressions")
    listops.add_argument("--test", type=_positive, default=500, help="test expressions")
    listops.add_argument("--max-len", type=_positive, default=2000, help="lengths < this")
    listops.add_argument("--min-len", type=_non_negative, help="lengths > this (max-len / 4)")
    listops.add_argument("--max-depth", type=_positive, default=10)
    listops.add_argument("--max-args", type=_positive, default=10)
    listops.add_argument("--model", choices=tuple(LISTOPS_MODELS), default="hmld")
    listops.add_argument("--mode", choices=_MODES, default="dissipative", help="HML-D mode")
    listops.add_argument("--pooling", choices=POOLINGS, default="last")
    listops.add_argument("--steps", type=_non_negative, default=400)
    listops.add_argument("--batch", type=_positive, default=16)
    listops.add_argument("--d-model", type=_positive, default=32)
    listops.add_argument("--n-layers", type=_positive, default=2)
    listops.add_argument("--n-heads", type=_positive, default=4, help="transformer heads")
    listops.add_argument("--lr", type=float, default=3e-3)
    listops.add_argument("--seed", type=int, default=0)
    listops.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    listops.add_argument("--log-every", type=_positive, default=25)
    listops.add_argument("--json", type=Path, help="write the result here")
    return parser


def _run_copy(args) -> dict:
    if args.alphabet < 2:
        raise UsageError(f"--alphabet must be >= 2, got {args.alphabet}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    task = CopyTask(length=args.length, tokens=args.tokens, alphabet=args.alphabet)
    lag = task.length + task.tokens + 1
    config = CopyModelConfig(
        model=args.model,
        mode=args.mode,
        d_model=args.d_model,
        n_layers=args.n_layers,
        half_life_max=max(10_000.0, 4.0 * lag),  # some channels remember past the lag at init
        dt_min=min(1e-3, math.pi / lag),  # and some oscillate slowly enough to count it
    )
    print(  # noqa: T201
        f"copy task: L={task.length} K={task.tokens} A={task.alphabet} (T={task.seq_len}), "
        f"model {args.model}{'/' + args.mode if args.model == 'hmld' else ''}, "
        f"d_model {args.d_model} x {args.n_layers}, batch {args.batch}, {args.steps} steps, "
        f"{args.device}",
        flush=True,
    )
    start = time.perf_counter()
    model, loss = train_copy(
        task,
        config,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        log_every=args.log_every,
        log=lambda line: print(line, flush=True),  # noqa: T201
    )
    train_s = time.perf_counter() - start
    accuracy = evaluate_copy(
        model,
        task,
        sequences=args.eval_sequences,
        batch=args.batch,
        seed=args.seed + 1_000_003,  # held out: never the training stream
        streaming=args.streaming,
        device=args.device,
    )
    wall_s = time.perf_counter() - start
    chance = 1.0 / task.alphabet
    streamed = f" streamed in pieces of {args.streaming}" if args.streaming else ""
    print(  # noqa: T201
        f"held-out token accuracy {accuracy:.3f} on {args.eval_sequences} fresh sequences "
        f"(chance {chance:.3f}){streamed}; train {train_s:.1f} s, wall {wall_s:.1f} s"
    )
    return {
        "task": "copy",
        **asdict(task),
        "seq_len": task.seq_len,
        "model": args.model,
        "mode": args.mode if args.model == "hmld" else None,
        "config": asdict(config),
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "final_loss": loss,
        "accuracy": accuracy,
        "chance": chance,
        "eval_sequences": args.eval_sequences,
        "streaming": args.streaming,
        "train_s": train_s,
        "wall_s": wall_s,
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


def _run_probe(args) -> dict:
    start = time.perf_counter()
    result = impulse_probe(args.length, d_model=args.d_model, seed=args.seed)
    result["wall_s"] = time.perf_counter() - start
    cons, diss = result["conservative"], result["dissipative"]
    print(  # noqa: T201
        f"impulse probe, L={args.length}, d_model {args.d_model}, float64, layers at init\n"
        f"  conservative: shadow energy ratio E(L)/E(0) = {cons['energy_ratio']:.12f}, "
        f"max channel drift {cons['max_channel_energy_drift']:.2e}, "
        f"state norm ratio {cons['state_norm_ratio']:.3f}\n"
        f"  dissipative:  energy ratio {diss['energy_ratio']:.3e}, "
        f"{diss['channels_energy_below_half']}/{diss['channels']} channels below half "
        f"({diss['channels_oscillatory']} oscillatory: half-life as initialized to "
        f"{diss['oscillatory_effective_over_nominal_max_error']:.1e}; the rest overdamped, "
        f"slower); nominal half-lives {diss['nominal_half_life_min']:.0f}.."
        f"{diss['nominal_half_life_max']:.0f} steps, effective max "
        f"{diss['effective_half_life_max']:.0f}\n"
        f"  oscillatory channels, log energy decay measured / predicted exp(−γΔt): median "
        f"{diss['log_decay_measured_over_predicted_median']:.4f}, range "
        f"{diss['log_decay_measured_over_predicted_min']:.4f}.."
        f"{diss['log_decay_measured_over_predicted_max']:.4f}\n"
        f"  wall {result['wall_s']:.1f} s"
    )
    return {"task": "probe", **result}


def _listops_setup(args) -> tuple[ListOpsConfig, ModelConfig]:
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if args.model == "transformer" and (
        args.d_model % args.n_heads or (args.d_model // args.n_heads) % 2
    ):
        message = f"--d-model {args.d_model} must split into --n-heads {args.n_heads} even heads"
        raise UsageError(message)
    min_len = args.max_len // 4 if args.min_len is None else args.min_len
    try:
        task = ListOpsConfig(
            max_depth=args.max_depth,
            max_args=args.max_args,
            min_length=min_len,
            max_length=args.max_len,
        )
    except ValueError as error:  # the window or the tree shape cannot give an expression
        raise UsageError(f"--max-len/--min-len/--max-depth/--max-args: {error}") from None
    config = ModelConfig(
        d_model=args.d_model,
        n_layers=args.n_layers,
        d_state=args.d_model,
        hmld_mode=args.mode,
        n_heads=args.n_heads,
    )
    return task, config


def _run_listops(args) -> dict:
    task, config = _listops_setup(args)
    start = time.perf_counter()
    try:  # one pool of distinct expressions, split: no expression is in both sets
        sequences, labels = generate_listops(task, args.train + args.test, seed=args.seed)
    except RuntimeError as error:
        raise UsageError(f"--train/--test/--max-len/--min-len: {error}") from None
    train = ListOpsData.from_lists(sequences[: args.train], labels[: args.train])
    test = ListOpsData.from_lists(sequences[args.train :], labels[args.train :])
    generate_s = time.perf_counter() - start
    lengths = train.lengths.float()
    print(  # noqa: T201
        f"listops: {args.train} train / {args.test} test expressions, "
        f"{task.min_length} < length < {task.max_length} (train mean {lengths.mean():.0f}, "
        f"max {int(lengths.max())}), max_depth {task.max_depth}, max_args {task.max_args}; "
        f"generated in {generate_s:.1f} s\n"
        f"model {args.model}{'/' + args.mode if args.model == 'hmld' else ''}, "
        f"d_model {args.d_model} x {args.n_layers}, {args.pooling} pooling, batch {args.batch}, "
        f"{args.steps} steps, lr {args.lr}, {args.device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    options = {k: getattr(args, k) for k in ("steps", "batch", "lr", "seed", "device")}
    model, loss = train_listops(
        args.model,
        config,
        train,
        pooling=args.pooling,
        log_every=args.log_every,
        log=lambda line: print(line, flush=True),  # noqa: T201
        **options,
    )
    train_s = time.perf_counter() - start - generate_s
    score = evaluate_listops(model, test, batch=2 * args.batch, device=args.device)
    wall_s = time.perf_counter() - start
    low, high = score["ci95"]
    print(  # noqa: T201
        f"test accuracy {score['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, "
        f"{score['correct']}/{score['examples']}); majority class of the test set "
        f"{score['majority']:.3f}; chance {score['chance']:.3f}; "
        f"train {train_s:.1f} s, wall {wall_s:.1f} s"
    )
    return {
        "task": "listops",
        "generator": asdict(task),
        "train_examples": args.train,
        "test_examples": args.test,
        "train_mean_length": lengths.mean().item(),
        "model": args.model,
        "pooling": args.pooling,
        "mode": args.mode if args.model == "hmld" else None,
        "config": asdict(config),
        **options,
        "final_loss": loss,
        **score,
        "generate_s": generate_s,
        "train_s": train_s,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),
    }


_RUNS = {"copy": _run_copy, "probe": _run_probe, "listops": _run_listops}


def main(argv: list[str] | None = None) -> int:
    """Run a validation; return 0, or 2 after one line on stderr for bad input."""
    try:
        args = build_parser().parse_args(argv)
        if args.json is not None and not args.json.parent.is_dir():
            raise UsageError(f"--json: directory {args.json.parent} does not exist")
        result = _RUNS[args.command](args)
    except UsageError as error:
        print(f"python -m hamfin.validate: error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    if args.json is not None:
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(result, indent=2) + "\n")
        partial.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
