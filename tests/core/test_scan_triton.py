"""The Triton HML-D scan against its reference ``scan_ref``: outputs, final state, gradients.

Without a GPU the kernels run under Triton's CPU interpreter. The interpreter is chosen when
``triton.jit`` decorates a kernel, i.e. when ``hamfin.core.scan_triton`` is first imported, and
by then another test module may already have imported it compiled for the GPU. So the
interpreted comparisons run in ONE child process (this file run as a script with
``TRITON_INTERPRET=1`` in its environment, ``--worker``), which computes every case and prints
the error metrics as JSON; each test below asserts on its own case. The parent never depends on
import order, and the child pays the torch/triton import once.

GPU tests (marked ``gpu``) run in-process on CUDA at full sizes and skip without a device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# Selective cases use two channel blocks of 4 (the second ragged: 6 = 4 + 2); the others one
# ragged block of 8 (the interpreter's cost grows with the number of programs).
B, L, D, BLOCK_D = 2, 37, 6, 4


# ----------------------------------------------------------------------------------------------
# Cases: built and compared in the worker (also used, at full size, by the GPU tests).
# ----------------------------------------------------------------------------------------------


def _inputs(B, L, D, *, selective_dt, selective_gamma, dtype, device="cpu", seed=0):
    """Stable random inputs (Δ = 2 sqrt(m/k) sigmoid(·) keeps Δ²k/m < 4) and an initial state."""
    g = torch.Generator().manual_seed(seed)
    k = 0.5 + torch.rand(D, generator=g, dtype=torch.float64)
    m = 0.5 + torch.rand(D, generator=g, dtype=torch.float64)
    dt_shape = (B, L, D) if selective_dt else (D,)
    gm_shape = (B, L, D) if selective_gamma else (D,)
    dt = 2 * torch.sqrt(m / k) * torch.sigmoid(torch.randn(dt_shape, generator=g, dtype=k.dtype))
    gamma = 2 * torch.rand(gm_shape, generator=g, dtype=k.dtype)
    f = torch.randn(B, L, D, generator=g, dtype=k.dtype)
    state = torch.randn(B, D, 2, generator=g, dtype=k.dtype)
    return [x.to(device=device, dtype=dtype) for x in (f, dt, gamma, k, m, state)]


def _rel(a, b) -> float:
    """max |a - b| / max |b| (both upcast to float64)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _compare(run, inputs, *, ref_dtype=torch.float64, seed=1) -> dict:
    """Run ``run`` and ``scan_ref`` (in ``ref_dtype`` on the same values) with one random loss
    on both outputs; return relative errors of qp, final state and every gradient."""
    from hamfin.core.scan import scan_ref

    names = ("f", "dt", "gamma", "k", "m", "state")
    mine = [x.detach().clone().requires_grad_(True) for x in inputs]
    ref = [x.detach().to(ref_dtype).requires_grad_(True) for x in inputs]
    qp, final = run(*mine)
    qp_r, final_r = scan_ref(*ref)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(qp_r.shape, generator=g, dtype=torch.float64).to(qp_r.device)
    wf = torch.randn(final_r.shape, generator=g, dtype=torch.float64).to(qp_r.device)
    ((qp.double() * w).sum() + (final.double() * wf).sum()).backward()
    ((qp_r.double() * w).sum() + (final_r.double() * wf).sum()).backward()
    out = {"qp": _rel(qp, qp_r), "final": _rel(final, final_r), "dtype": str(qp.dtype)}
    out["final_dtype"] = str(final.dtype)
    out["final_is_last"] = bool(torch.equal(final, qp[:, -1]))
    for name, a, b in zip(names, mine, ref):
        out["grad_" + name] = _rel(a.grad, b.grad)
        out["grad_dtype_" + name] = a.grad.dtype == a.dtype and a.grad.shape == a.shape
    return out


def _worker() -> dict:
    """Every interpreted case; runs only in the child process with TRITON_INTERPRET=1."""
    from hamfin.core.scan_triton import _interpreting, _scan_triton, scan_triton

    assert _interpreting(), "the worker must run with TRITON_INTERPRET=1"
    fp32 = torch.float32

    def variant(name, chunk, segments=None, block_d=2 * BLOCK_D):
        return lambda *a: _scan_triton(
            *a, chunk_size=chunk, block_d=block_d, variant=name, segments=segments
        )

    results = {}
    timings = {}

    def case(key, run, inputs, **kw):
        start = time.perf_counter()
        results[key] = _compare(run, inputs, **kw)
        timings[key] = round(time.perf_counter() - start, 2)

    # L = 37 with chunks of 16: two whole chunks and a ragged tail of 5.
    per_channel = _inputs(B, L, D, selective_dt=False, selective_gamma=False, dtype=fp32)
    selective = _inputs(B, L, D, selective_dt=True, selective_gamma=True, dtype=fp32)
    mixed = _inputs(B, L, D, selective_dt=False, selective_gamma=True, dtype=torch.float64)
    case("single_per_channel", variant("single", 16), per_channel)
    case("single_selective", variant("single", 16, block_d=BLOCK_D), selective)
    # chunks of 8: 5 chunks; 3 segments of 2 chunks (16 steps), the last one ragged (5 steps)
    case("segmented_selective", variant("segmented", 8, 3, block_d=BLOCK_D), selective)
    # Δ per channel and γ per step: both gradient reduction paths, in fp64 (tight tolerance)
    case("single_mixed_float64", variant("single", 16), mixed)
    case("segmented_mixed_float64", variant("segmented", 8, 3), mixed)
    for half in (torch.float16, torch.bfloat16):
        ins = _inputs(B, L, D, selective_dt=True, selective_gamma=False, dtype=half)
        # the reference runs on the same rounded values in float64
        case(f"single_{half}".replace("torch.", ""), variant("single", 16), ins)
    # other broadcasts: Δ (B, 1, D) constant in time, γ (1, L, D) shared by the batch, scalar k
    g = torch.Generator().manual_seed(4)
    f64 = torch.float64
    broadcast = [
        torch.randn(B, 19, D, generator=g, dtype=f64),
        0.2 + 0.3 * torch.rand(B, 1, D, generator=g, dtype=f64),
        0.5 * torch.rand(1, 19, D, generator=g, dtype=f64),
        torch.tensor(1.3, dtype=f64),
        0.7 + torch.rand(D, generator=g, dtype=f64),
    ]
    case("broadcast_shapes_float64", variant("single", 8), broadcast)
    # public entry, no state, a chunk size that is not a power of two (rounded up to 16)
    f, dt, gamma, k, m, _ = per_channel
    case("public_no_state", lambda *a: scan_triton(*a, chunk_size=12), [f, dt, gamma, k, m])

    # state carried across two calls equals one call
    f, dt, gamma, k, m, state = selective
    run = variant("single", 16)
    qp, final = run(f, dt, gamma, k, m, state)
    qp1, mid = run(f[:, :19], dt[:, :19], gamma[:, :19], k, m, state)
    qp2, final2 = run(f[:, 19:], dt[:, 19:], gamma[:, 19:], k, m, mid)
    results["two_calls"] = {
        "qp": _rel(torch.cat((qp1, qp2), 1), qp),
        "final": _rel(final2, final),
    }
    # an empty sequence returns the initial state
    qp0, final0 = run(f[:, :0], dt[:, :0], gamma[:, :0], k, m, state)
    results["empty"] = {"shape": list(qp0.shape), "final": _rel(final0, state)}
    # zero forcing and damping: the shadow energy p²/(2m) + (k/2)(1 - Δ²k/(4m)) q² is conserved
    steps = 200
    dt0 = 0.3 * torch.ones(D, dtype=torch.float64)
    k0, m0 = torch.ones(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)
    s0 = torch.randn(1, D, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    qp, _ = variant("single", 64)(
        torch.zeros(1, steps, D, dtype=torch.float64), dt0, torch.zeros(D, dtype=torch.float64),
        k0, m0, s0,
    )  # fmt: skip
    q, p = qp[..., 0], qp[..., 1]
    energy = p**2 / (2 * m0) + 0.5 * k0 * (1 - dt0**2 * k0 / (4 * m0)) * q**2
    results["shadow_energy"] = {"drift": float((energy - energy[:, :1]).abs().max())}
    results["timings_s"] = timings
    return results


# ----------------------------------------------------------------------------------------------
# In-process tests (run first, while the interpreter worker computes): import fallback,
# ahead-of-time compilation, launch planning, argument errors.
# ----------------------------------------------------------------------------------------------


def test_module_imports_without_triton_and_reports_it():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from hamfin.core import scan_triton as st\n"
        "assert st.HAS_TRITON is False\n"
        "try:\n"
        "    st.scan_triton(torch.zeros(1, 2, 3), torch.ones(3), torch.zeros(3),"
        " torch.ones(3), torch.ones(3))\n"
        "except RuntimeError as e:\n"
        "    assert 'triton' in str(e); print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_auto_plan_segments_only_few_sequences():
    pytest.importorskip("triton", reason="triton is not installed")
    from hamfin.core.scan_triton import _Plan

    long_single = _Plan(1, 2**20, 1024, 64, 32, "auto", None, sms=132)  # 32 programs alone
    assert long_single.n_seg > 1 and long_single.n_seg * 32 >= 4 * 132
    assert long_single.seg_len % 64 == 0 and long_single.seg_len * long_single.n_seg >= 2**20
    assert (long_single.n_seg - 1) * long_single.seg_len < 2**20  # no empty segment
    many = _Plan(8, 16384, 1024, 64, 32, "auto", None, sms=132)  # 256 programs
    assert many.n_seg == 1 and many.seg_len >= 16384


@pytest.mark.parametrize("kernel", ["_fwd_kernel", "_bwd_kernel"])
def test_kernel_compiles_for_hopper_without_a_gpu(kernel):
    # The interpreter runs the kernels as NumPy; it cannot catch what fails only when Triton
    # lowers them for the GPU. Compile ahead of time for sm_90 (Triton's own ptxas, no device).
    # Δ per channel and γ per step, so both branches of the parameter loads are compiled.
    triton = pytest.importorskip("triton", reason="triton is not installed")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from hamfin.core import scan_triton as st

    if st._interpreting():
        pytest.skip("this process runs the interpreter; kernels are not JIT functions")
    fn = getattr(st, kernel)
    flags = {"CHUNK": 64, "BLOCK_D": 32, "DT_PC": True, "GM_PC": False, "STORE_BND": True}
    constexprs = {n: v for n, v in flags.items() if n in fn.arg_names}
    signature = {
        n: "constexpr" if n in constexprs else "*fp32" if n.endswith("_ptr") else "i32"
        for n in fn.arg_names
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    options = {"num_warps": 4, "enable_fp_fusion": True}  # explicit: silences a 3.9 warning
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    assert len(compiled.asm["cubin"]) > 0 and ".target sm_90" in compiled.asm["ptx"]


def test_cpu_tensors_without_interpreter_are_refused():
    pytest.importorskip("triton", reason="triton is not installed")
    from hamfin.core.scan_triton import _interpreting, scan_triton

    if _interpreting():
        pytest.skip("this process runs the interpreter, which accepts CPU tensors")
    with pytest.raises(ValueError, match="CUDA"):
        scan_triton(
            torch.zeros(1, 2, 3), torch.ones(3), torch.zeros(3), torch.ones(3), torch.ones(3)
        )


# ----------------------------------------------------------------------------------------------
# Interpreted tests (one child process for all of them, started by an autouse fixture).
# ----------------------------------------------------------------------------------------------

FP32_TOL = 1e-5
FP64_TOL = 1e-11
HALF_TOL = {"float16": 2e-3, "bfloat16": 1.6e-2}  # one rounding of the output, relative
GRAD_KEYS = ("grad_f", "grad_dt", "grad_gamma", "grad_k", "grad_m", "grad_state")


@pytest.fixture(scope="module", autouse=True)
def _worker_process():
    """Start the interpreter worker before the first test of this module, so that the
    in-process tests (which come first) run while it computes; stop it if nobody waited."""
    try:
        import triton  # noqa: F401
    except ImportError:
        yield None
        return
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def interpreted(_worker_process) -> dict:
    if _worker_process is None:
        pytest.skip("triton is not installed")
    out, err = _worker_process.communicate(timeout=600)
    if _worker_process.returncode != 0:
        pytest.fail(f"interpreter worker failed:\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _assert_matches(r: dict, tol: float, grad_tol: float | None = None) -> None:
    grad_tol = tol if grad_tol is None else grad_tol
    assert r["qp"] < tol, r
    assert r["final"] < tol, r
    assert r["final_is_last"], r
    for key in GRAD_KEYS:
        if key in r:
            assert r[key] < grad_tol, (key, r)
            assert r[key.replace("grad_", "grad_dtype_")], (key, "grad dtype/shape", r)


def test_single_pass_with_per_channel_params_matches_ref(interpreted):
    _assert_matches(interpreted["single_per_channel"], FP32_TOL)


def test_single_pass_with_selective_params_and_ragged_tail_matches_ref(interpreted):
    _assert_matches(interpreted["single_selective"], FP32_TOL)


def test_segmented_forward_and_backward_with_selective_params_match_ref(interpreted):
    _assert_matches(interpreted["segmented_selective"], FP32_TOL)


def test_float64_gradients_match_autograd_of_ref_to_roundoff(interpreted):
    # Δ per channel, γ per step: both reduction paths of the analytic backward, at fp64.
    _assert_matches(interpreted["single_mixed_float64"], FP64_TOL)
    _assert_matches(interpreted["segmented_mixed_float64"], FP64_TOL)
    assert interpreted["single_mixed_float64"]["dtype"] == "torch.float64"


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_inputs_give_half_outputs_close_to_ref(interpreted, half):
    r = interpreted[f"single_{half}"]
    assert r["dtype"] == f"torch.{half}" and r["final_dtype"] == f"torch.{half}", r
    # outputs: one rounding to the half dtype; gradients: also rounded on the way out
    _assert_matches(r, HALF_TOL[half], grad_tol=4 * HALF_TOL[half])


def test_params_broadcast_over_batch_time_or_all_match_ref_with_reduced_gradients(interpreted):
    # gradients come back in each parameter's own shape: (B, 1, D), (1, L, D), () ...
    _assert_matches(interpreted["broadcast_shapes_float64"], FP64_TOL)


def test_public_entry_without_state_and_odd_chunk_size_matches_ref(interpreted):
    r = interpreted["public_no_state"]
    _assert_matches(r, FP32_TOL)
    assert "grad_state" not in r or r["grad_state"] < FP32_TOL


def test_state_carried_across_two_calls_equals_one_call(interpreted):
    r = interpreted["two_calls"]
    assert r["qp"] < FP32_TOL and r["final"] < FP32_TOL, r


def test_empty_sequence_returns_initial_state(interpreted):
    r = interpreted["empty"]
    assert r["shape"] == [B, 0, D, 2] and r["final"] == 0.0, r


def test_shadow_energy_is_conserved_without_forcing_or_damping(interpreted):
    assert interpreted["shadow_energy"]["drift"] < 1e-12, interpreted["shadow_energy"]


# ----------------------------------------------------------------------------------------------
# GPU tests: full sizes against scan_ref on the same device.
# ----------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cuda_run(**kw):
    from hamfin.core.scan_triton import HAS_TRITON, _interpreting, _scan_triton

    if not HAS_TRITON or _interpreting():
        pytest.skip("triton missing or running interpreted in this process")
    return lambda *a: _scan_triton(*a, **kw)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("selective", [False, True])
def test_gpu_single_pass_matches_ref_at_full_size(selective):
    ins = _inputs(4, 4096 + 17, 256, selective_dt=selective, selective_gamma=selective,
                  dtype=torch.float32, device="cuda")  # fmt: skip
    _assert_matches(_compare(_cuda_run(variant="single"), ins), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_gpu_segmented_forward_matches_ref_for_one_long_sequence():
    ins = _inputs(1, 16384 + 5, 64, selective_dt=True, selective_gamma=True,
                  dtype=torch.float32, device="cuda")  # fmt: skip
    _assert_matches(_compare(_cuda_run(variant="segmented", segments=37), ins), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_gpu_auto_dispatch_segments_one_long_sequence_and_matches_chunked():
    from hamfin.core.scan import scan_chunked
    from hamfin.core.scan_triton import _Plan, _sm_count

    B, L, D = 1, 2**20, 64
    plan = _Plan(B, L, D, 64, 32, "auto", None, _sm_count(torch.device("cuda")))
    assert plan.n_seg > 1  # 2 programs alone would leave the GPU idle
    ins = _inputs(B, L, D, selective_dt=False, selective_gamma=False,
                  dtype=torch.float32, device="cuda")  # fmt: skip
    with torch.no_grad():
        qp, final = _cuda_run()(*ins)
        qp_r, final_r = scan_chunked(*[x.double() for x in ins], chunk_size=1024)
    assert _rel(qp, qp_r) < 1e-3 and _rel(final, final_r) < 1e-3


@pytest.mark.gpu
@needs_cuda
def test_gpu_bfloat16_inputs_match_ref():
    ins = _inputs(8, 2048, 128, selective_dt=True, selective_gamma=True,
                  dtype=torch.bfloat16, device="cuda")  # fmt: skip
    r = _compare(_cuda_run(), ins)
    _assert_matches(r, HALF_TOL["bfloat16"], grad_tol=4 * HALF_TOL["bfloat16"])


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    print(json.dumps(_worker()))
