"""Benchmarks that print figures (never timed tests).

    python -m hamfin.bench scan [--json PATH] [--device cpu|cuda] [--lengths 1024 4096] ...
    python -m hamfin.bench train ...      (delegates to hamfin.bench_train.main)

``scan`` times ``scan_ref`` (the per-step loop) and ``scan_chunked`` at (B, D, L) on one device,
forward alone (inputs without grad) and forward + backward (gradients w.r.t. f, Δ, γ, k, m and
the initial state, loss = sum of all states), as the best of ``--repeats`` runs
(``--ref-repeats`` for the reference), and prints the ratios. Δ and γ are per channel (the
default, dissipative layer) or, with ``--selective``, per step (B, L, D).

Threads: 1 by default (``--threads 0``: torch's default) because on a shared 2-core machine
torch's intra-op thread pool made both timings erratic (ref forward 11.5 s with 2 threads
against 1.3 s with 1, measured); the reference's (B, D) steps are single-threaded work anyway.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the inputs; on CPU, the growth
of the peak resident set size (VmHWM, reset once the inputs exist) over the resident size before
the call, in a fresh subprocess per measurement (tracemalloc does not see torch's allocations).
On CUDA the figures of ``hamfin.core.scan_triton.gpu_figures`` are merged in when that module
imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from hamfin.core import scan_chunked, scan_ref

SCAN_IMPLS = {"ref": scan_ref, "chunked": scan_chunked}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags in one line and exits with 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _inputs(B, D, L, *, selective, device, seed=0):
    """Forcing, parameters (stable: Δ²k/m < 4) and an initial state, float32."""
    g = torch.Generator().manual_seed(seed)
    k = 0.5 + torch.rand(D, generator=g)
    m = 0.5 + torch.rand(D, generator=g)
    shape = (B, L, D) if selective else (D,)
    dt = 2 * torch.sqrt(m / k) * 0.9 * torch.rand(shape, generator=g)
    gamma = 0.01 * torch.rand(shape, generator=g)
    f = torch.randn(B, L, D, generator=g)
    state = torch.randn(B, D, 2, generator=g)
    return [x.to(device) for x in (f, dt, gamma, k, m, state)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_once(impl, inputs, *, backward, chunk_size):
    """Run one measurement; return seconds."""
    fn = SCAN_IMPLS[impl]
    device = inputs[0].device
    if backward:
        leaves = [x.detach().requires_grad_() for x in inputs]
        _sync(device)
        start = time.perf_counter()
        qp, final = fn(*leaves, chunk_size=chunk_size)
        (qp.sum() + final.sum()).backward()
    else:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            fn(*inputs, chunk_size=chunk_size)
    _sync(device)
    return time.perf_counter() - start


def _status_kib(field: str) -> int:
    """Read one ``/proc/self/status`` field (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_child(impl, B, D, L, selective, chunk_size, threads):
    """Subprocess body: print the peak RSS growth (MB) of one forward + backward on CPU.

    The peak is VmHWM, reset to the current RSS (``clear_refs`` 5) once the inputs exist;
    ``ru_maxrss`` would not do: Linux carries the parent's peak across fork and exec.
    """
    if threads:
        torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    # warm up first: the first backward loads libraries and thread pools (tens of MB)
    _run_once(impl, _inputs(2, 4, 16, selective=selective, device=cpu), backward=True, chunk_size=8)
    inputs = _inputs(B, D, L, selective=selective, device=cpu)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    rss_before = _status_kib("VmRSS")
    _run_once(impl, inputs, backward=True, chunk_size=chunk_size)
    print(max(0, _status_kib("VmHWM") - rss_before) / 1024)


def _peak_mem_mb(impl, B, D, L, *, selective, chunk_size, threads, device):
    """Peak memory (MB) of one forward + backward above the inputs; see the module docstring."""
    if device.type == "cuda":
        inputs = _inputs(B, D, L, selective=selective, device=device)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _run_once(impl, inputs, backward=True, chunk_size=chunk_size)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    code = (
        "from hamfin.bench import _peak_child; "
        f"_peak_child({impl!r}, {B}, {D}, {L}, {selective}, {chunk_size}, {threads})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def _gpu_figures(B, D, L, selective):
    """``scan_triton.gpu_figures`` when it imports and runs, else a note of why not."""
    try:
        from hamfin.core.scan_triton import gpu_figures
    except ImportError as err:
        return {"gpu_figures_error": f"hamfin.core.scan_triton does not import: {err}"}
    try:
        return gpu_figures(B, D, L, selective=selective)
    except (RuntimeError, TypeError) as err:
        return {"gpu_figures_error": str(err)}


def bench_scan(args) -> list[dict]:
    """Measure every shape; print progress and a table; return the JSON entries."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = []
    for L in args.lengths:
        B, D = args.batch, args.channels
        inputs = _inputs(B, D, L, selective=args.selective, device=device)
        entry = {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "B": B,
            "D": D,
            "L": L,
            "dtype": "float32",
            "selective": args.selective,
            "chunk_size": args.chunk_size,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "ref_repeats": args.ref_repeats,
            # PyTorch's own switch for 2 MB pages on large CPU tensors (fewer first-touch faults)
            "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE", "") == "1",
        }
        for impl in ("chunked", "ref"):
            warm = _inputs(
                B, D, min(L, 2 * args.chunk_size), selective=args.selective, device=device
            )
            _run_once(impl, warm, backward=True, chunk_size=args.chunk_size)  # warm up
            for backward, key in ((False, "fwd"), (True, "fwdbwd")):
                times = []
                for _ in range(args.repeats if impl == "chunked" else args.ref_repeats):
                    times.append(
                        _run_once(impl, inputs, backward=backward, chunk_size=args.chunk_size)
                    )
                    print(f"  L={L} {impl} {key}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
                entry[f"{impl}_{key}_s"] = min(times)
        entry["speedup_fwd"] = entry["ref_fwd_s"] / entry["chunked_fwd_s"]
        entry["speedup_fwdbwd"] = entry["ref_fwdbwd_s"] / entry["chunked_fwdbwd_s"]
        for impl in ("chunked", "ref"):
            print(f"  L={L} {impl} peak memory ...", file=sys.stderr, flush=True)
            entry[f"{impl}_peak_mem_mb"] = _peak_mem_mb(
                impl,
                B,
                D,
                L,
                selective=args.selective,
                chunk_size=args.chunk_size,
                threads=args.threads,
                device=device,
            )
        entry["peak_mem_mb"] = entry["chunked_peak_mem_mb"]
        entry["peak_mem_method"] = (
            "torch.cuda.max_memory_allocated above the inputs"
            if device.type == "cuda"
            else "VmHWM growth over VmRSS before the call (inputs built), fresh subprocess"
        )
        if device.type == "cuda":
            entry.update(_gpu_figures(B, D, L, args.selective))
        entries.append(entry)
        print(
            f"{entry['device']} B={B} D={D} L={L}"
            f"{' selective' if args.selective else ''} threads={entry['threads']}: "
            f"ref fwd {entry['ref_fwd_s']:.3f} s, fwd+bwd {entry['ref_fwdbwd_s']:.3f} s | "
            f"chunked fwd {entry['chunked_fwd_s']:.3f} s, fwd+bwd "
            f"{entry['chunked_fwdbwd_s']:.3f} s | speedup fwd {entry['speedup_fwd']:.1f}x, "
            f"fwd+bwd {entry['speedup_fwdbwd']:.1f}x | peak memory fwd+bwd: chunked "
            f"{entry['chunked_peak_mem_mb']:.0f} MB, ref {entry['ref_peak_mem_mb']:.0f} MB",
            flush=True,
        )
    return entries


def _scan_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hamfin.bench scan", description=bench_scan.__doc__)
    parser.add_argument("--json", type=Path, default=None, help="write the entries here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="runs of chunked (best taken)")
    parser.add_argument("--ref-repeats", type=int, default=3, help="runs of ref (best taken)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (0: torch default)"
    )
    parser.add_argument("--selective", action="store_true", help="Δ, γ per step (B, L, D)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``scan`` or ``train``; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("scan", "train"):
        got = argv[0] if argv else "nothing"
        sys.stderr.write(f"hamfin.bench: error: expected 'scan' or 'train', got {got!r}\n")
        return 2
    if argv[0] == "train":
        try:
            from hamfin.bench_train import main as train_main
        except ImportError as err:
            sys.stderr.write(f"hamfin.bench: error: 'train' needs hamfin.bench_train ({err})\n")
            return 2
        return train_main(argv[1:]) or 0
    args = _scan_parser().parse_args(argv[1:])
    problems = [
        f"--{name.replace('_', '-')} must be >= 1"
        for name in ("batch", "channels", "chunk_size", "repeats", "ref_repeats")
        if getattr(args, name) < 1
    ]
    if any(n < 1 for n in args.lengths):
        problems.append("--lengths must be >= 1")
    if args.threads < 0:
        problems.append("--threads must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda: no CUDA device is available")
    if args.json is not None and not args.json.parent.is_dir():
        problems.append(f"--json: folder {args.json.parent} does not exist")
    if problems:
        sys.stderr.write("hamfin.bench scan: error: " + "; ".join(problems) + "\n")
        return 2
    entries = bench_scan(args)
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
