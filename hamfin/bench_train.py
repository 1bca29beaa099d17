"""Training throughput benchmark: bars/s (forward + backward + optimizer step) of HML-D vs LSTM
vs causal Transformer (and leapfrog attention on request) at windows 512 and 4096, in one run.

    python -m hamfin.bench_train                       # CPU, batch 2, d_model 64, 2 layers
    python -m hamfin.bench_train --json bench.json --models hmld lstm transformer

Prints one line per (model, window), then for each model the time ratio between the longest
and the shortest window against the ratio of their lengths (8 for 4096/512: linear scaling).
Figures are measured, never estimated; compare them only within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hamfin.models import MODEL_NAMES, ModelConfig
from hamfin.system import ForecastSystem, TrainConfig

N_FEATURES = 19  # what build_features makes with the default FeatureConfig


def time_steps(system: ForecastSystem, batch, *, steps: int, warmup: int = 2) -> float:
    """Return the median seconds of one forward + backward + AdamW step."""
    optimizer = system.configure_optimizers()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        system.losses(batch)["loss"].backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def measure(name: str, window: int, *, batch_size: int, config: ModelConfig, steps: int) -> dict:
    """Time one model at one window; return a JSON-ready entry."""
    torch.manual_seed(0)
    system = ForecastSystem(name, config, TrainConfig(), n_features=N_FEATURES)
    x = torch.randn(batch_size, window, N_FEATURES)
    y = torch.stack(
        [
            torch.randn(batch_size, window),
            (torch.rand(batch_size, window) > 0.5).float(),
            torch.rand(batch_size, window) + 0.1,
        ],
        dim=-1,
    )
    w = torch.ones(batch_size, window)
    seconds = time_steps(system, (x, y, w), steps=steps)
    return {
        "model": name,
        "window": window,
        "batch_size": batch_size,
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "step_s": seconds,
        "bars_per_s": batch_size * window / seconds,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m hamfin.bench_train")
    parser.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=["hmld", "lstm", "transformer"]
    )
    parser.add_argument("--windows", nargs="+", type=int, default=[512, 4096])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the entries here")
    args = parser.parse_args(argv)
    config = ModelConfig(d_model=args.d_model, d_state=args.d_model, n_layers=args.n_layers)
    for name in args.models:  # process-level warm-up (allocator, thread pool, oneDNN), discarded
        measure(name, min(args.windows), batch_size=args.batch_size, config=config, steps=1)
    entries = []
    print(
        f"training throughput on CPU ({torch.get_num_threads()} threads), batch "  # noqa: T201
        f"{args.batch_size}, d_model {args.d_model}, {args.n_layers} layers, fwd+bwd+AdamW"
    )
    print(f"{'model':<14}{'window':>8}{'step s':>10}{'bars/s':>12}")  # noqa: T201
    for name in args.models:
        for window in args.windows:
            entry = measure(
                name, window, batch_size=args.batch_size, config=config, steps=args.steps
            )
            entries.append(entry)
            print(
                f"{name:<14}{window:>8}{entry['step_s']:>10.3f}"  # noqa: T201
                f"{entry['bars_per_s']:>12.0f}",
                flush=True,
            )
    windows = sorted(set(args.windows))
    lo, hi = windows[0], windows[-1]
    pairs = [(lo, hi)] + [p for p in zip(windows, windows[1:]) if p != (lo, hi)]
    for a, b in pairs:
        print(f"time ratio {b}/{a} (linear scaling = {b / a:g}):")  # noqa: T201
        for name in args.models:
            step = {e["window"]: e["step_s"] for e in entries if e["model"] == name}
            print(f"  {name:<14}{step[b] / step[a]:8.2f}")  # noqa: T201
    if hi > lo:
        fastest = max((e for e in entries if e["window"] == hi), key=lambda e: e["bars_per_s"])
        print(f"fastest at window {hi}: {fastest['model']}")  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(entries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
