"""scan_chunked (and the dispatching scan) against scan_ref: outputs, final states, gradients."""

import re

import pytest
import torch

from hamfin.core import scan, scan_chunked, scan_ref

MODES = ("conservative", "dissipative", "selective")
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_inputs(mode, B, L, D, dtype, seed=0):
    """Random forcing, parameters (Δ²k/m < 4) and initial state for one mode."""
    g = torch.Generator().manual_seed(seed)
    k = 0.5 + torch.rand(D, generator=g, dtype=dtype)
    m = 0.5 + torch.rand(D, generator=g, dtype=dtype)
    shape = (B, L, D) if mode == "selective" else (D,)
    # Δ up to 0.95 of the stability limit 2 sqrt(m/k)
    dt = 2 * torch.sqrt(m / k) * (0.05 + 0.9 * torch.rand(shape, generator=g, dtype=dtype))
    gamma = torch.rand(shape, generator=g, dtype=dtype)
    if mode == "conservative":
        gamma = torch.zeros_like(gamma)
    f = torch.randn(B, L, D, generator=g, dtype=dtype)
    state = torch.randn(B, D, 2, generator=g, dtype=dtype)
    return [f, dt, gamma, k, m, state]


def run_with_grads(fn, inputs, weights, **kwargs):
    """Return (qp, final, grads of every input) for a fixed random linear loss."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    qp, final = fn(*leaves, **kwargs)
    loss = (qp * weights[0]).sum() + (final * weights[1]).sum()
    loss.backward()
    return qp.detach(), final.detach(), [x.grad for x in leaves]


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_close_relative(actual, expected, tol, what):
    err = relative_error(actual, expected)
    assert err < tol, f"{what}: relative error {err:.2e} >= {tol:.0e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64, 256])
def test_scan_chunked_matches_ref_outputs_states_and_gradients(mode, chunk_size, dtype):
    B, L, D = 3, 70, 5  # 70 is not a multiple of 3, 16, 64; shorter than 256
    inputs = make_inputs(mode, B, L, D, dtype, seed=chunk_size)
    weights = (torch.randn(B, L, D, 2, dtype=dtype), torch.randn(B, D, 2, dtype=dtype))
    ref = run_with_grads(scan_ref, inputs, weights)
    got = run_with_grads(scan_chunked, inputs, weights, chunk_size=chunk_size)
    tol = TOLERANCE[dtype]
    assert_close_relative(got[0], ref[0], tol, "states")
    assert_close_relative(got[1], ref[1], tol, "final state")
    for name, g_got, g_ref in zip(("f", "dt", "gamma", "k", "m", "state"), got[2], ref[2]):
        assert g_got.shape == g_ref.shape, name
        assert_close_relative(g_got, g_ref, 10 * tol, f"grad {name}")


@pytest.mark.parametrize("mode", MODES)
def test_scan_chunked_with_batch_of_one_and_large_batch_matches_ref(mode):
    for B in (1, 33):
        inputs = make_inputs(mode, B, 41, 4, torch.float64, seed=B)
        weights = (torch.randn(B, 41, 4, 2, dtype=torch.float64), torch.zeros(B, 4, 2).double())
        ref = run_with_grads(scan_ref, inputs, weights)
        got = run_with_grads(scan_chunked, inputs, weights, chunk_size=8)
        assert_close_relative(got[0], ref[0], 1e-10, f"states B={B}")
        for g_got, g_ref in zip(got[2], ref[2]):
            assert_close_relative(g_got, g_ref, 1e-9, f"grads B={B}")


def test_per_channel_and_expanded_time_varying_parameters_give_the_same_scan():
    # (D,) parameters take the matrix-form path, (B, L, D) ones the leapfrog path.
    f, dt, gamma, k, m, state = make_inputs("dissipative", 2, 50, 3, torch.float64)
    qp_const, final_const = scan_chunked(f, dt, gamma, k, m, state, chunk_size=7)
    qp_vary, final_vary = scan_chunked(
        f, dt.expand(2, 50, 3), gamma.expand(2, 50, 3), k, m, state, chunk_size=7
    )
    torch.testing.assert_close(qp_const, qp_vary, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final_const, final_vary, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [scan_ref, scan_chunked], ids=["ref", "chunked"])
def test_two_calls_with_carried_state_equal_one_call(mode, fn):
    f, dt, gamma, k, m, state = make_inputs(mode, 2, 45, 3, torch.float64)
    whole, final = fn(f, dt, gamma, k, m, state, chunk_size=8)

    def part(x, sl):
        return x[:, sl] if x.dim() == 3 else x

    first, mid = fn(*(part(x, slice(0, 19)) for x in (f, dt, gamma)), k, m, state, chunk_size=8)
    second, end = fn(*(part(x, slice(19, 45)) for x in (f, dt, gamma)), k, m, mid, chunk_size=8)
    torch.testing.assert_close(torch.cat((first, second), dim=1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(end, final, rtol=1e-12, atol=1e-12)


def test_step_by_step_streaming_equals_one_batch_call():
    f, dt, gamma, k, m, state = make_inputs("selective", 2, 30, 3, torch.float64)
    whole, final = scan_chunked(f, dt, gamma, k, m, state)
    s, steps = state, []
    for t in range(30):
        qp_t, s = scan_chunked(f[:, t : t + 1], dt[:, t : t + 1], gamma[:, t : t + 1], k, m, s)
        steps.append(qp_t)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, final, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [scan_ref, scan_chunked], ids=["ref", "chunked"])
def test_empty_sequence_returns_the_initial_state(fn):
    f, dt, gamma, k, m, state = make_inputs("dissipative", 2, 0, 3, torch.float64)
    qp, final = fn(f, dt, gamma, k, m, state)
    assert qp.shape == (2, 0, 3, 2)
    torch.testing.assert_close(final, state)


def test_zero_state_is_the_default():
    f, dt, gamma, k, m, _ = make_inputs("dissipative", 2, 9, 3, torch.float64)
    a, _ = scan_chunked(f, dt, gamma, k, m)
    b, _ = scan_chunked(f, dt, gamma, k, m, torch.zeros(2, 3, 2, dtype=torch.float64))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bfloat16_inputs_are_computed_in_float32_and_cast_back():
    inputs = make_inputs("dissipative", 2, 40, 3, torch.float32)
    qp32, _ = scan_chunked(*inputs)
    qp16, final16 = scan_chunked(*(x.bfloat16() for x in inputs))
    assert qp16.dtype == torch.bfloat16 and final16.dtype == torch.bfloat16
    # only the inputs' rounding to bf16 separates the two (a bf16 state would drift further)
    assert relative_error(qp16.float(), qp32) < 0.05


@pytest.mark.parametrize("mode", ["dissipative", "selective"])
def test_scan_chunked_passes_gradcheck_in_float64(mode):
    inputs = make_inputs(mode, 2, 7, 3, torch.float64)
    leaves = [x.clone().requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(
        lambda *xs: scan_chunked(*xs, chunk_size=3), leaves, eps=1e-6, atol=1e-7
    )


def test_dispatch_on_cpu_is_the_chunked_scan():
    inputs = make_inputs("selective", 2, 20, 3, torch.float64)
    torch.testing.assert_close(scan(*inputs, chunk_size=4)[0], scan_chunked(*inputs)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "f": a["f"][0]}, "f must be a (B, L, D) tensor"),
        (lambda a: {**a, "state": a["state"][:, :2]}, "state must be (B, D, 2)"),
        (lambda a: {**a, "dt": torch.ones(4, 4)}, "dt of shape"),
        (lambda a: {**a, "k": torch.ones(2)}, "k must be (D,)"),
    ],
)
def test_bad_shapes_raise_one_clear_error(change, message):
    f, dt, gamma, k, m, state = make_inputs("dissipative", 2, 5, 3, torch.float64)
    args = change(dict(f=f, dt=dt, gamma=gamma, k=k, m=m, state=state))
    for fn in (scan_ref, scan_chunked):
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(**args)


def test_chunk_size_below_one_is_rejected():
    inputs = make_inputs("dissipative", 1, 5, 2, torch.float64)
    with pytest.raises(ValueError, match="chunk_size"):
        scan_chunked(*inputs, chunk_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", MODES)
def test_scan_on_cuda_matches_ref_on_cpu(mode):
    inputs = make_inputs(mode, 4, 300, 16, torch.float32)
    weights = (torch.randn(4, 300, 16, 2), torch.randn(4, 16, 2))
    ref = run_with_grads(scan_ref, [x.double() for x in inputs], [w.double() for w in weights])
    for fn in (scan, scan_chunked):
        got = run_with_grads(
            fn, [x.cuda() for x in inputs], [w.cuda() for w in weights], chunk_size=64
        )
        assert_close_relative(got[0].cpu().double(), ref[0], 1e-5, "states")
        for g_got, g_ref in zip(got[2], ref[2]):
            assert_close_relative(g_got.cpu().double(), g_ref, 1e-4, "grads")
