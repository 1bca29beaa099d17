"""Long Range Arena ListOps for the HML-D core: generator, tokenizer, evaluator, classifier.

ListOps (Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning"; long
version in the Long Range Arena, Tay et al. 2020, "Long Range Arena: A Benchmark for Efficient
Transformers") asks for the value of a nested prefix expression over the digits 0-9:

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   →   9

Operators: ``MAX``, ``MIN``, ``MED`` (median) and ``SM`` (sum modulo 10). ``MED`` of an even
number of arguments follows the original generators (nyu-mll/spinn ``make_data.py`` and LRA's
``lra_benchmarks/data/listops.py``, both ``int(np.median(args))``): the mean of the two middle
values, truncated, i.e. ``(a + b) // 2`` for the non-negative digits (``MED 1 2`` = 1).

Generation recipe (LRA's ``generate_tree(1, max_depth, max_args)``, here with a seeded
``random.Random``, drawing in the same order):

1. A node at depth ``d < max_depth`` (the root is depth 1) is an operator with probability
   ``VALUE_P`` = 0.25, else a digit drawn uniformly; at ``d = max_depth`` it is always a digit,
   so brackets nest at most ``max_depth − 1`` deep.
2. An operator takes ``randint(2, max_args)`` arguments (inclusive), each a node at ``d + 1``;
   then its operator is drawn uniformly from the four.
3. The length is the number of tokens (``[MAX`` is one token, ``]`` one, a digit one). Trees are
   kept when ``min_length < length < max_length`` (strict, as LRA), the rest are redrawn; a tree
   is abandoned as soon as it reaches ``max_length`` tokens, which leaves the distribution of
   the kept trees unchanged. Kept trees are unique within one call (LRA draws a set, then
   splits it), so train and test drawn together never share an expression.

LRA's defaults: ``max_depth`` = 10, ``max_args`` = 10, lengths 500-2000, 96,000 train / 2,000
validation / 2,000 test expressions. LRA's released inputs also had the binary-tree parentheses
``(`` ``)`` stripped; here they are never written.

Token vocabulary (``VOCAB``, 16 ids): 0 ``<pad>``, 1-10 the digits 0-9 (id = digit + 1),
11 ``[MIN``, 12 ``[MAX``, 13 ``[MED``, 14 ``[SM``, 15 ``]``. Sequences are right-padded with 0.

The classifier (``ListOpsClassifier``) is embedding → ``n_layers`` residual blocks of
``hamfin.models`` (RMSNorm → mixer → gated MLP) → RMSNorm → pooling over the valid positions
(the last one, or the mean) → 10-way head. Only the mixer differs between ``hmld``, ``lstm`` and
``transformer``; every mixer is causal, so right padding never reaches a valid position.
The CLI is ``python -m hamfin.validate listops`` (see ``hamfin.validate``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamfin.models.mixers import CausalAttentionMixer, HMLDMixer, LSTMMixer
from hamfin.models.net import Block, Mixer, ModelConfig, RMSNorm

__all__ = [
    "CLASSES",
    "LISTOPS_MODELS",
    "OPERATORS",
    "POOLINGS",
    "VALUE_P",
    "VOCAB",
    "ListOpsClassifier",
    "ListOpsConfig",
    "ListOpsData",
    "detokenize",
    "evaluate",
    "evaluate_listops",
    "generate_listops",
    "max_nesting",
    "tokenize",
    "train_listops",
    "wilson_interval",
]

OPERATORS = ("MIN", "MAX", "MED", "SM")
VOCAB = ("<pad>", *(str(d) for d in range(10)), *(f"[{op}" for op in OPERATORS), "]")
PAD, CLOSE = 0, len(VOCAB) - 1
_DIGIT0, _OP0 = 1, 11  # id of digit 0 and of the first operator
_IDS = {token: i for i, token in enumerate(VOCAB)}
CLASSES = 10
VALUE_P = 0.25  # LRA: probability that a node above max_depth is an operator
LISTOPS_MODELS: dict[str, Callable[[ModelConfig], Mixer]] = {
    "hmld": HMLDMixer,
    "lstm": LSTMMixer,
    "transformer": CausalAttentionMixer,
}
POOLINGS = ("last", "mean")


def _apply(op: int, args: list[int]) -> int:
    """Value of operator id ``op`` (0 MIN, 1 MAX, 2 MED, 3 SM) on digit values ``args``."""
    if op == 0:
        return min(args)
    if op == 1:
        return max(args)
    if op == 2:
        s, n = sorted(args), len(args)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2  # int(np.median)
    return sum(args) % 10


# -- tokens -----------------------------------------------------------------------------------


def tokenize(text: str) -> list[int]:
    """Return the token ids of a whitespace-separated expression such as ``"[MAX 2 9 ]"``."""
    ids = []
    for token in text.split():
        if token not in _IDS or token == VOCAB[PAD]:
            raise ValueError(f"unknown ListOps token {token!r}")
        ids.append(_IDS[token])
    return ids


def detokenize(ids: Sequence[int]) -> str:
    """Return the text of token ids, padding dropped."""
    return " ".join(VOCAB[int(i)] for i in ids if int(i) != PAD)


def evaluate(expression: str | Sequence[int]) -> int:
    """Return the exact value (0-9) of an expression given as text or token ids (pad ignored).

    Raises ``ValueError`` for anything that is not one well-formed expression (an operator
    needs at least one argument here, although the generator always gives it two or more).
    """
    ids = tokenize(expression) if isinstance(expression, str) else [int(i) for i in expression]
    ids = [i for i in ids if i != PAD]
    stack: list[tuple[int, list[int]]] = []  # open operators and their arguments so far
    result = None
    for position, i in enumerate(ids):
        if result is not None:
            raise ValueError(f"trailing token at position {position} after a full expression")
        if _DIGIT0 <= i < _OP0:
            value = i - _DIGIT0
        elif _OP0 <= i < CLOSE:
            stack.append((i - _OP0, []))
            continue
        elif i == CLOSE:
            if not stack or not stack[-1][1]:
                raise ValueError(f"']' without an open operator and arguments at {position}")
            op, args = stack.pop()
            value = _apply(op, args)
        else:
            raise ValueError(f"unknown token id {i} at position {position}")
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    if result is None:
        raise ValueError("incomplete expression (empty or unclosed operator)")
    return result


def max_nesting(ids: Sequence[int]) -> int:
    """Return how deep operators nest (``[MAX 1 2 ]`` is 1, a lone digit 0)."""
    depth = deepest = 0
    for i in ids:
        if _OP0 <= int(i) < CLOSE:
            depth += 1
            deepest = max(deepest, depth)
        elif int(i) == CLOSE:
            depth -= 1
    return deepest


# -- generator --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListOpsConfig:
    """The expression distribution; the defaults are LRA's.

    Attributes
    ----------
    max_depth : int
        Depth at which nodes are forced to be digits (root = 1; brackets nest <= max_depth − 1).
    max_args : int
        Most arguments of an operator (at least 2).
    min_length, max_length : int
        Kept lengths are strictly between them, in tokens.
    operators : tuple of str
        Subset of ``OPERATORS`` to draw from.
    """

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    operators: tuple[str, ...] = OPERATORS

    def __post_init__(self):
        problems = []
        if self.max_depth < 2 or self.max_args < 2:
            problems.append("need max_depth >= 2 and max_args >= 2")
        if not 0 <= self.min_length < self.max_length - 1:
            problems.append("need 0 <= min_length < max_length - 1 (lengths strictly between)")
        if not self.operators or not set(self.operators) <= set(OPERATORS):
            problems.append(f"operators must be a non-empty subset of {OPERATORS}")
        if not problems and self.longest() <= self.min_length:
            problems.append(
                f"no tree is longer than min_length={self.min_length} "
                f"(longest {self.longest()} at max_depth={self.max_depth}, "
                f"max_args={self.max_args})"
            )
        if problems:
            raise ValueError("ListOpsConfig: " + "; ".join(problems))

    def longest(self) -> int:
        """Return the length of the largest possible tree."""
        length = 1  # a digit at max_depth
        for _ in range(self.max_depth - 1):
            length = 2 + self.max_args * length
        return length


class _TooLong(Exception):
    pass


_STALL = 100_000  # draws in a row without a new kept expression before giving up


def _draw(rng: random.Random, depth: int, config: ListOpsConfig, out: list[int]) -> int:
    """Append one LRA node's tokens to ``out`` and return its value."""
    if depth < config.max_depth and rng.random() <= VALUE_P:
        slot = len(out)
        out.append(PAD)  # the operator is drawn after its arguments, as in LRA
        args = [_draw(rng, depth + 1, config, out) for _ in range(rng.randint(2, config.max_args))]
        op = OPERATORS.index(rng.choice(config.operators))
        out[slot] = _OP0 + op
        out.append(CLOSE)
        if len(out) >= config.max_length:
            raise _TooLong
        return _apply(op, args)
    digit = rng.randrange(10)
    out.append(_DIGIT0 + digit)
    if len(out) >= config.max_length:
        raise _TooLong
    return digit


def generate_listops(
    config: ListOpsConfig, count: int, *, seed: int, max_tries: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """Draw ``count`` distinct expressions with ``seed``; return (token ids, labels).

    ``max_tries`` (default ``max(100_000, 500 * count)``; LRA's window keeps about 1 draw in
    12) bounds the rejection sampling, and so does a run of ``_STALL`` draws in a row that keep
    nothing (the window's distinct expressions are used up); ``RuntimeError`` then.
    """
    rng = random.Random(seed)
    max_tries = max_tries or max(100_000, 500 * count)
    seen: set[tuple[int, ...]] = set()
    sequences, labels = [], []
    last_kept = 0
    for attempt in range(max_tries):
        if len(sequences) == count or attempt - last_kept > _STALL:
            break
        out: list[int] = []
        try:
            value = _draw(rng, 1, config, out)
        except _TooLong:
            continue
        key = tuple(out)
        if config.min_length < len(out) and key not in seen:
            seen.add(key)
            sequences.append(out)
            labels.append(value)
            last_kept = attempt
    if len(sequences) < count:
        message = (
            f"generate_listops: only {len(sequences)} of {count} distinct expressions with "
            f"{config.min_length} < length < {config.max_length} in {attempt + 1} draws"
        )
        raise RuntimeError(message)
    return sequences, labels


@dataclass(frozen=True)
class ListOpsData:
    """Padded token ids (N, T) uint8, lengths (N,) and labels (N,) of a set of expressions."""

    tokens: Tensor
    lengths: Tensor
    labels: Tensor

    @classmethod
    def from_lists(cls, sequences: list[list[int]], labels: list[int]) -> ListOpsData:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        tokens = torch.full((len(sequences), int(lengths.max())), PAD, dtype=torch.uint8)
        for row, sequence in enumerate(sequences):
            tokens[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.uint8)
        return cls(tokens, lengths, torch.tensor(labels, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (tokens (B, T_b) long, lengths (B,), labels (B,)) trimmed to the batch."""
        lengths = self.lengths[rows]
        return self.tokens[rows, : int(lengths.max())].long(), lengths, self.labels[rows]

    def majority(self) -> float:
        """Return the share of the most frequent label (the majority-class accuracy)."""
        return Counter(self.labels.tolist()).most_common(1)[0][1] / len(self)


# -- classifier -------------------------------------------------------------------------------


class ListOpsClassifier(nn.Module):
    """Token ids (B, T) and lengths (B,) → class logits (B, 10).

    Parameters
    ----------
    model : str
        Mixer family, a key of ``LISTOPS_MODELS``.
    config : ModelConfig
        The shared architecture config of ``hamfin.models`` (width, depth, HML-D mode, heads).
    pooling : str
        "last" (the state at the last valid token, which has read the whole expression
        causally) or "mean" (masked mean over valid positions).
    """

    def __init__(self, model: str, config: ModelConfig, *, pooling: str = "last") -> None:
        super().__init__()
        if model not in LISTOPS_MODELS or pooling not in POOLINGS:
            message = f"ListOpsClassifier: model in {tuple(LISTOPS_MODELS)}, pooling in {POOLINGS}"
            raise ValueError(message)
        self.pooling = pooling
        self.embed = nn.Embedding(len(VOCAB), config.d_model, padding_idx=PAD)
        mixer = LISTOPS_MODELS[model]
        self.blocks = nn.ModuleList(Block(config, mixer(config)) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = self.embed(tokens)  # (B, T, d)
        for block in self.blocks:
            h, _, _ = block(h, None)
        h = self.norm(h)  # (B, T, d)
        if self.pooling == "last":
            pooled = h[torch.arange(h.shape[0], device=h.device), lengths - 1]  # (B, d)
        else:
            mask = torch.arange(h.shape[1], device=h.device) < lengths[:, None]  # (B, T)
            pooled = (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)
        return self.head(pooled)  # (B, 10)


# -- training and scoring ---------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Return the Wilson score interval (default 95%) of a binomial proportion."""
    if trials < 1:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


@torch.no_grad()
def evaluate_listops(
    model: ListOpsClassifier, data: ListOpsData, *, batch: int = 64, device: str = "cpu"
) -> dict:
    """Return accuracy, its 95% Wilson interval, counts and the majority baseline on ``data``."""
    was_training = model.training
    model.eval()
    correct = 0
    order = torch.argsort(data.lengths)  # similar lengths together: less padding
    for start in range(0, len(data), batch):
        tokens, lengths, labels = data.batch(order[start : start + batch])
        logits = model(tokens.to(device), lengths.to(device))
        correct += int((logits.argmax(-1).cpu() == labels).sum())
    model.train(was_training)
    low, high = wilson_interval(correct, len(data))
    return {
        "accuracy": correct / len(data),
        "ci95": [low, high],
        "correct": correct,
        "examples": len(data),
        "majority": data.majority(),
        "chance": 1 / CLASSES,
    }


def train_listops(
    model_name: str,
    config: ModelConfig,
    train: ListOpsData,
    *,
    steps: int,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    pooling: str = "last",
    device: str = "cpu",
    log_every: int = 0,
    log=print,
) -> tuple[ListOpsClassifier, float]:
    """Train a ``ListOpsClassifier`` with AdamW and a one-cycle schedule (as ``train_copy``).

    Batches are drawn without replacement, epoch after epoch, in a seeded order. Returns the
    model and the mean training loss of the last ``log_every`` (or 50) steps.
    """
    torch.manual_seed(seed)
    model = ListOpsClassifier(model_name, config, pooling=pooling).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(len(train), generator=generator), 0
    window = log_every or 50
    losses, hits, seen = [], 0, 0
    for step in range(1, steps + 1):
        if cursor + batch > len(train):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        tokens, lengths, labels = train.batch(order[cursor : cursor + batch])
        cursor += batch
        logits = model(tokens.to(device), lengths.to(device))
        loss = F.cross_entropy(logits, labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses = [*losses[-window + 1 :], loss.item()]
        hits += int((logits.argmax(-1).cpu() == labels).sum())
        seen += len(labels)
        if log_every and (step % log_every == 0 or step == steps):
            log(
                f"step {step:>6}  loss {sum(losses) / len(losses):.4f}  "
                f"train accuracy {hits / seen:.3f}"
            )
            hits = seen = 0
    return model, (sum(losses) / len(losses) if losses else float("nan"))
