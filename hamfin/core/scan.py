"""The HML-D scan: a bank of D damped, forced oscillators evolved by the conformal leapfrog.

One step per channel (HMLD.md), with e = exp(-γΔ/2), h = Δ/2, quadratic V(q) = k q²/2::

    p ← e·p                      half damping
    p ← p + h(−k q + f_t)        half kick
    q ← q + (Δ/m)·p              drift
    p ← p + h(−k q + f_t)        half kick
    p ← e·p                      half damping

which is the linear recurrence s_t = A_t s_{t−1} + b_t f_t of HMLD.md (``energy.transition``).

Three implementations share one signature and one return ``(qp, final_state)``:

- ``scan_ref``      a plain loop over time; the specification (autograd does the backward).
- ``scan_chunked``  pure torch, CPU and CUDA: chunks of length C, all chunks advanced together,
                    a carry between chunks, and a hand-written adjoint (reverse-time scan).
- ``scan``          dispatch: ``scan_triton`` for CUDA tensors when it imports, else chunked.

Shapes: ``f`` (B, L, D); ``dt`` and ``gamma`` broadcastable to (B, L, D) — (D,) per channel or
(B, L, D) selective; ``k``, ``m`` (D,); ``state`` (B, D, 2) with ``[..., 0] = q``,
``[..., 1] = p``. Returns ``qp`` (B, L, D, 2), the state after each step, and the final state
(B, D, 2). The functions do not clamp: the caller keeps Δ²k/m < 4 and γ ≥ 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scan", "scan_chunked", "scan_ref"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _prepare(f, dt, gamma, k, m, state):
    """Validate the arguments; return them 3-D/1-D in the compute dtype, and the output dtype.

    ``dt`` and ``gamma`` come back 3-D but NOT expanded (a size-1 dim means "constant along it"),
    so per-channel parameters cost no memory. fp16/bf16 are computed in fp32 and cast back.
    """
    if not isinstance(f, Tensor) or f.dim() != 3:
        shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"scan: f must be a (B, L, D) tensor, got {shape}")
    B, L, D = f.shape
    tensors = {}
    for name, value in (("dt", dt), ("gamma", gamma), ("k", k), ("m", m)):
        tensors[name] = torch.as_tensor(value, device=f.device)
    if state is not None:
        if not isinstance(state, Tensor) or tuple(state.shape) != (B, D, 2):
            shape = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"scan: state must be (B, D, 2) = {(B, D, 2)}, got {shape}")
    dtype = f.dtype
    for value in (*tensors.values(), *(() if state is None else (state,))):
        if value.is_floating_point():
            dtype = torch.promote_types(dtype, value.dtype)
    out_dtype = dtype
    if dtype in _LOW_PRECISION:
        dtype = torch.float32
    for name in ("dt", "gamma"):
        value = tensors[name]
        if value.dim() > 3:
            raise ValueError(f"scan: {name} must broadcast to (B, L, D), got {tuple(value.shape)}")
        value = value.reshape((1,) * (3 - value.dim()) + tuple(value.shape))
        try:
            torch.broadcast_shapes(value.shape, (B, L, D))
        except RuntimeError:
            message = f"scan: {name} of shape {tuple(value.shape)} does not broadcast to {B, L, D}"
            raise ValueError(message) from None
        if value.shape[0] not in (1, B) or value.shape[1] not in (1, L):
            raise ValueError(f"scan: {name} must broadcast to (B, L, D), got {tuple(value.shape)}")
        tensors[name] = value.to(dtype)
    for name in ("k", "m"):
        value = tensors[name]
        if value.dim() > 1 or value.numel() not in (1, D):
            raise ValueError(f"scan: {name} must be (D,) = ({D},), got {tuple(value.shape)}")
        tensors[name] = torch.broadcast_to(value.reshape(-1), (D,)).to(dtype)
    if state is None:
        state = f.new_zeros((B, D, 2), dtype=dtype)
    return (
        f.to(dtype),
        tensors["dt"],
        tensors["gamma"],
        tensors["k"],
        tensors["m"],
        state.to(dtype),
        out_dtype,
    )


# ----------------------------------------------------------------------------------------------
# Reference: the specification, one Python step per time step.
# ----------------------------------------------------------------------------------------------


def scan_ref(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Evolve the oscillators one step at a time (the specification of the HML-D scan).

    Parameters
    ----------
    f : Tensor
        Forcing, (B, L, D).
    dt, gamma : Tensor
        Step Δ > 0 and damping γ ≥ 0, broadcastable to (B, L, D): (D,) or (B, L, D).
    k, m : Tensor
        Stiffness and mass, (D,), > 0.
    state : Tensor, optional
        Initial (q, p), (B, D, 2); zeros when None.
    chunk_size : int
        Unused; accepted so that every scan has one signature.

    Returns
    -------
    qp : Tensor
        (B, L, D, 2), the state after each step.
    final_state : Tensor
        (B, D, 2), the state after the last step (``state`` when L == 0).
    """
    f, dt, gamma, k, m, state, out_dtype = _prepare(f, dt, gamma, k, m, state)
    B, L, D = f.shape
    # unbind (not indexing) along time: its backward stacks once instead of writing L full-size
    # gradients; time-constant parameters are used as they are.
    fs = f.unbind(1)
    dts = dt.unbind(1) if dt.shape[1] > 1 else dt[:, 0:1].unbind(1) * L
    gammas = gamma.unbind(1) if gamma.shape[1] > 1 else gamma[:, 0:1].unbind(1) * L
    q, p = state[..., 0], state[..., 1]  # (B, D) each
    steps = []
    for t in range(L):
        d, ft = dts[t], fs[t]
        e = torch.exp(-0.5 * gammas[t] * d)
        p = e * p  # half damping
        p = p + 0.5 * d * (ft - k * q)  # half kick
        q = q + d / m * p  # drift
        p = p + 0.5 * d * (ft - k * q)  # half kick
        p = e * p  # half damping
        steps.append(torch.stack((q, p), dim=-1))
    if L == 0:
        return f.new_zeros((B, 0, D, 2)).to(out_dtype), state.to(out_dtype)
    qp = torch.stack(steps, dim=1)  # (B, L, D, 2)
    return qp.to(out_dtype), qp[:, -1].to(out_dtype)


# ----------------------------------------------------------------------------------------------
# Chunked: all chunks advance together; a carry between chunks; a hand-written adjoint.
#
# Internally the states are planar, (B, L, 2, D), so that every (B, n, D) slice is contiguous
# along D; the public (B, L, D, 2) result is a transposed view. Every loop works on slices of one
# position of all chunks, in place, so the working set stays in cache.
# ----------------------------------------------------------------------------------------------


def _cuts(L: int, size: int) -> list[tuple[int, int, int]]:
    """Cut [0, L) into (lo, hi, chunk) stretches: whole chunks of ``size``, then a ragged tail."""
    whole = L // size * size
    cuts = [(0, whole, size)] if whole else []
    if whole < L:
        cuts.append((whole, L, L - whole))
    return cuts


def _blocks(x: Tensor, lo: int, hi: int, size: int) -> Tensor:
    """View ``x[:, lo:hi]`` as chunks (B, n, size, ...); a time-constant x as (B, 1, 1, ...)."""
    if x.shape[1] == 1:
        return x.unsqueeze(2)
    return x[:, lo:hi].unflatten(1, (-1, size))


def _at(blocks: Tensor, j: int) -> Tensor:
    """Position ``j`` of every chunk: (B, n, ...), or (B, 1, ...) for a time-constant tensor."""
    return blocks[:, :, j if blocks.shape[2] > 1 else 0]


def _carry(start: Tensor, transfer, local: Tensor, *, transpose: bool = False) -> Tensor:
    """Pass the state between chunks: returns the (B, n, 2, D) state entering each chunk.

    ``start`` (B, 2, D) enters chunk 0; the state leaving chunk c is P_c·(entering) + local_c with
    P_c = ``transfer`` entries (p00, p01, p10, p11), each broadcastable to (B, n, D). With
    ``transpose`` the chunks run last to first through P_cᵀ (the adjoint's carry).
    """
    B, n, _, D = local.shape
    entering = local.new_empty((B, n, 2, D))
    p00, p01, p10, p11 = (x.expand(-1, n, -1) for x in transfer)
    if transpose:
        p01, p10 = p10, p01
    q, p = start[:, 0], start[:, 1]
    for c in reversed(range(n)) if transpose else range(n):
        entering[:, c, 0], entering[:, c, 1] = q, p
        q, p = (
            torch.addcmul(local[:, c, 0], p00[:, c], q).addcmul_(p01[:, c], p),
            torch.addcmul(local[:, c, 1], p10[:, c], q).addcmul_(p11[:, c], p),
        )
    return entering


# --- time-constant Δ and γ: matrix form --------------------------------------------------------
# The step is one fixed 2×2 matrix per channel: s_t = A s_{t-1} + b f_t, and every chunk's
# transfer is A^C. The backward sums ∂L/∂(A, b); autograd carries them to (Δ, γ, k, m) on (D,).


def _matrix_entries(dt, gamma, k, m):
    """Return (a00, a01, a10, a11, b0, b1) of HMLD.md's A and b, broadcast from the arguments."""
    a = dt * dt * k / (2 * m)
    e = torch.exp(-0.5 * gamma * dt)
    return (
        1 - a,
        dt * e / m,
        -e * (0.5 * dt * k) * (2 - a),
        e * e * (1 - a),
        dt * dt / (2 * m),
        e * dt * (1 - 0.5 * a),
    )


def _matmul2(x, y):
    """Multiply 2×2 matrices given as entry tuples (x00, x01, x10, x11), elementwise."""
    return (
        x[0] * y[0] + x[1] * y[2],
        x[0] * y[1] + x[1] * y[3],
        x[2] * y[0] + x[3] * y[2],
        x[2] * y[1] + x[3] * y[3],
    )


def _matpow2(a, n: int):
    """Return the n-th power of the 2×2 matrix ``a`` (entry tuple) by repeated squaring."""
    one, zero = torch.ones_like(a[0]), torch.zeros_like(a[0])
    result = (one, zero, zero, one)
    while n:
        if n & 1:
            result = _matmul2(a, result)
        a, n = _matmul2(a, a), n >> 1
    return result


def _powers(a, b, C: int):
    """Tables for one chunk of a constant step: K_j = A^{C-1-j} b and A^{j+1}, j = 0..C-1.

    ``a`` = (a00, a01, a10, a11), ``b`` = (b0, b1), each (B, 1, D). Returns K (C, B, 1, 2, D) and
    the columns of (A^{j+1})ᵀ, two tensors (C, B, 1, 2, D): ((M00, M01), (M10, M11)).
    """
    a00, a01, a10, a11 = a
    kq, kp = b
    ks = []
    for _ in range(C):  # K_{C-1} = b, K_{j-1} = A K_j
        ks.append(torch.stack((kq, kp), dim=-2))
        kq, kp = a00 * kq + a01 * kp, a10 * kq + a11 * kp
    m = a
    col0, col1 = [], []
    for _ in range(C):  # A^1, A^2, ...
        col0.append(torch.stack((m[0], m[1]), dim=-2))
        col1.append(torch.stack((m[2], m[3]), dim=-2))
        m = _matmul2(a, m)
    return torch.stack(ks[::-1]), torch.stack(col0), torch.stack(col1)


def _forward_constant(coef, f: Tensor, qp: Tensor, start: Tensor) -> Tensor:
    """Advance ``start`` (B, 2, D) through chunks ``f`` (B, n, C, D); write ``qp`` (B, n, C, 2, D).

    ``coef`` = (a00, a01, a10, a11, b0, b1), each broadcastable to (B, 1, D). Returns the final
    state (B, 2, D).
    """
    a00, a01, a10, a11, b0, b1 = coef
    B, n, C, D = f.shape
    col0 = torch.stack((a00, a10), dim=-2)  # A's columns and b as (B, 1, 2, D)
    col1 = torch.stack((a01, a11), dim=-2)
    bvec = torch.stack((b0, b1), dim=-2)
    if n == 1:
        entering = start[:, None]  # (B, 1, 2, D)
    else:
        # 1. Every chunk's local response to its forcing, from a zero state: Σ_j A^{C-1-j} b f_j.
        kernel, _, _ = _powers((a00, a01, a10, a11), (b0, b1), C)
        local = f.new_zeros((B, n, 2, D))
        for j in range(C):
            local.addcmul_(kernel[j], f[:, :, j, None])
        # 2. Carry between chunks: entering_c = A^C entering_{c-1} + local_{c-1}.
        entering = _carry(start, _matpow2((a00, a01, a10, a11), C), local)
    # 3. Rerun every chunk from the state entering it, writing the states in place.
    s = entering
    for j in range(C):
        sj = qp[:, :, j]  # (B, n, 2, D)
        torch.mul(col0, s[:, :, 0:1], out=sj).addcmul_(col1, s[:, :, 1:2])
        sj.addcmul_(bvec, f[:, :, j, None])
        s = sj
    return qp[:, -1, -1]


def _backward_constant(coef, f, qp, g, grad_f, start, nu, sums) -> Tensor:
    """Run the adjoint backwards through chunks (B, n, C, D); return ν at the stretch's start.

    ν_t = Aᵀ(g_t + ν_{t+1}) is chunked like the forward. ``g`` (B, n, C, 2, D) is the gradient
    of the states, ``grad_f`` (B, n, C, D) receives the forcing's, ``start`` (B, 2, D) is the
    state before the stretch, ``nu`` (B, 2, D) the adjoint after it; ``sums`` collects
    Σ ∂L/∂(a00, a01, a10, a11, b0, b1), each reduced to its coefficient's shape.
    """
    a00, a01, a10, a11, b0, b1 = coef
    B, n, C, D = f.shape
    row0 = torch.stack((a00, a01), dim=-2)  # Aᵀ's columns as (B, 1, 2, D)
    row1 = torch.stack((a10, a11), dim=-2)
    if n == 1:
        entering = nu[:, None]
    else:
        # 1. Every chunk's local adjoint at its start, from zero at its end: Σ_j (Aᵀ)^{j+1} g_j.
        _, m_col0, m_col1 = _powers((a00, a01, a10, a11), (b0, b1), C)
        local = f.new_zeros((B, n, 2, D))
        for j in range(C):
            local.addcmul_(m_col0[j], g[:, :, j, 0:1]).addcmul_(m_col1[j], g[:, :, j, 1:2])
        # 2. Carry between chunks, last to first, through (A^C)ᵀ.
        entering = _carry(nu, _matpow2((a00, a01, a10, a11), C), local, transpose=True)
    # 3. Rerun every chunk backwards from the adjoint entering it, accumulating the gradients.
    prev0 = torch.cat((start[:, None], qp[:, :-1, C - 1]), dim=1)  # (B, n, 2, D)
    acc_a = f.new_zeros((B, n, 2, 2, D))  # Σ λ_r s_c: ∂L/∂A = λ s_{t-1}ᵀ
    acc_b = f.new_zeros((B, n, 2, D))  # Σ λ f: ∂L/∂b = λ f_t
    lam = torch.add(entering, g[:, :, C - 1])  # λ_t = g_t + ν_{t+1}, (B, n, 2, D)
    tmp = torch.empty_like(lam)
    for j in reversed(range(C)):
        prev = qp[:, :, j - 1] if j > 0 else prev0
        fj = f[:, :, j, None]
        acc_a.addcmul_(lam[:, :, :, None], prev[:, :, None])
        acc_b.addcmul_(lam, fj)
        torch.mul(b0, lam[:, :, 0], out=grad_f[:, :, j]).addcmul_(b1, lam[:, :, 1])  # bᵀλ
        if j == 0:
            break
        # λ_{t-1} = g_{t-1} + Aᵀ λ_t
        torch.addcmul(g[:, :, j - 1], row0, lam[:, :, 0:1], out=tmp).addcmul_(row1, lam[:, :, 1:2])
        lam, tmp = tmp, lam
    totals = (acc_a[:, :, 0, 0], acc_a[:, :, 0, 1], acc_a[:, :, 1, 0], acc_a[:, :, 1, 1])
    totals += (acc_b[:, :, 0], acc_b[:, :, 1])
    for total, c, acc in zip(totals, coef, sums):
        acc.add_(total.sum_to_size(c.shape))
    # ν at the stretch's start = Aᵀ λ of its first position (chunk 0)
    lam0 = lam[:, 0]
    return row0[:, 0] * lam0[:, 0:1] + row1[:, 0] * lam0[:, 1:2]


class _ConstantScan(torch.autograd.Function):
    """Chunked scan in matrix form for time-constant coefficients; saves f and the states."""

    @staticmethod
    def forward(ctx, a00, a01, a10, a11, b0, b1, f, state, chunk_size):
        coef = (a00, a01, a10, a11, b0, b1)
        B, L, D = f.shape
        qp = f.new_empty((B, L, 2, D))
        s = state
        for lo, hi, size in _cuts(L, chunk_size):
            s = _forward_constant(coef, _blocks(f, lo, hi, size), _blocks(qp, lo, hi, size), s)
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(*coef, f, state, qp)
        return qp, s.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_qp, g_final):
        *coef, f, state, qp = ctx.saved_tensors
        g_qp = torch.zeros_like(qp) if g_qp is None else g_qp
        nu = torch.zeros_like(state) if g_final is None else g_final.clone()
        grad_f = torch.empty_like(f)
        sums = [torch.zeros_like(c) for c in coef]
        for lo, hi, size in reversed(_cuts(f.shape[1], ctx.chunk_size)):
            start = state if lo == 0 else qp[:, lo - 1]
            nu = _backward_constant(
                coef,
                *(_blocks(x, lo, hi, size) for x in (f, qp, g_qp, grad_f)),
                start,
                nu,
                sums,
            )
        return (*sums, grad_f, nu, None)


# --- time-varying Δ_t or γ_t (selective): leapfrog form -----------------------------------------
# The coefficients h = Δ/2, h·k, w = Δ/m are recomputed per position (cheaper than storing them);
# e = exp(−γΔ/2) is computed once and saved. The backward is reverse mode through the five
# substeps, with the intermediate momenta rebuilt from the saved states.


def _leapfrog_(q, p, h, h_k, w, e, fj=None) -> None:
    """Advance (q, p) in place by one conformal leapfrog step with forcing ``fj`` (None: none)."""
    p.mul_(e)  # half damping
    p.addcmul_(h_k, q, value=-1.0)  # half kick: potential ...
    if fj is not None:
        p.addcmul_(h, fj)  # ... and forcing
    q.addcmul_(w, p)  # drift
    p.addcmul_(h_k, q, value=-1.0)  # half kick
    if fj is not None:
        p.addcmul_(h, fj)
    p.mul_(e)  # half damping


class _Varying:
    """Per-position coefficients of one stretch with time-varying Δ or γ, in reused buffers."""

    def __init__(self, dt, gamma, e, k, m, lo, hi, size):
        self.dt, self.gamma = _blocks(dt, lo, hi, size), _blocks(gamma, lo, hi, size)
        self.e = _blocks(e, lo, hi, size)
        self.k, self.m = k, m
        shape = torch.broadcast_shapes(_at(self.dt, 0).shape, _at(self.gamma, 0).shape)
        self.h, self.h_k, self.w = (dt.new_empty(shape) for _ in range(3))

    def compute_e(self, j: int) -> None:
        """Fill e = exp(−γΔ/2) at position ``j``."""
        torch.mul(_at(self.gamma, j), _at(self.dt, j), out=_at(self.e, j)).mul_(-0.5).exp_()

    def at(self, j: int):
        """Return (h, h·k, w, e) at position ``j`` of every chunk."""
        dt = _at(self.dt, j)
        torch.mul(dt, 0.5, out=self.h)
        torch.mul(self.h, self.k, out=self.h_k)
        torch.div(dt, self.m, out=self.w)
        return self.h, self.h_k, self.w, _at(self.e, j)


def _forward_varying(co: _Varying, f: Tensor, qp: Tensor, start: Tensor):
    """Advance ``start`` (B, 2, D) through chunks ``f`` (B, n, C, D); write ``qp``.

    Returns the final state (B, 2, D) and the chunk transfer matrices (entry tuple; None when
    n == 1), which the backward reuses.
    """
    B, n, C, D = f.shape
    for j in range(C):
        co.compute_e(j)
    transfer = None
    if n == 1:
        entering = start[:, None]
    else:
        # 1. Inside every chunk at once: the local response from a zero state, and the chunk's
        #    transfer matrix, column by column (unforced states started at (1, 0) and (0, 1)).
        local = f.new_zeros((B, n, 2, D))
        cols = f.new_zeros((2, *co.h.shape[:2], 2, D))  # (column, B, n, q|p, D)
        cols[0, :, :, 0], cols[1, :, :, 1] = 1.0, 1.0
        for j in range(C):
            h, h_k, w, e = co.at(j)
            _leapfrog_(local[:, :, 0], local[:, :, 1], h, h_k, w, e, f[:, :, j])
            _leapfrog_(cols[:, :, :, 0], cols[:, :, :, 1], h, h_k, w, e)
        transfer = (cols[0, :, :, 0], cols[1, :, :, 0], cols[0, :, :, 1], cols[1, :, :, 1])
        # 2. Carry between chunks.
        entering = _carry(start, transfer, local)
    # 3. Rerun every chunk from the state entering it, writing the states in place.
    # (the step of _leapfrog_, written straight into the output)
    q, p = entering[:, :, 0], entering[:, :, 1]
    for j in range(C):
        h, h_k, w, e = co.at(j)
        qj, pj, fj = qp[:, :, j, 0], qp[:, :, j, 1], f[:, :, j]
        torch.mul(p, e, out=pj).addcmul_(h_k, q, value=-1.0).addcmul_(h, fj)
        torch.addcmul(q, w, pj, out=qj)
        pj.addcmul_(h_k, qj, value=-1.0).addcmul_(h, fj).mul_(e)
        q, p = qj, pj
    return qp[:, -1, -1], transfer


def _store(target: Tensor, value: Tensor) -> None:
    """Write ``value`` into ``target``, summing over the dimensions ``target`` broadcasts."""
    target.copy_(value if value.shape == target.shape else value.sum_to_size(target.shape))


def _backward_varying(co: _Varying, f, qp, g, grad_f, start, nu, grads, transfer) -> Tensor:
    """Run the adjoint backwards through chunks (B, n, C, D); return ν at the stretch's start.

    Arguments as in ``_backward_constant``; ``grads`` holds ``dt``, ``gamma`` (chunk views of the
    full gradients where they vary in time, else accumulators) and ``k``, ``m`` (accumulators).
    """
    B, n, C, D = f.shape
    k, inv_m = co.k, 1.0 / co.m
    if n == 1:
        entering = nu[:, None].clone()
    else:
        # 1. Local adjoint inside every chunk, from zero at the chunk's end (Aᵀ: the substeps
        #    transposed, in reverse order).
        local = f.new_zeros((B, n, 2, D))
        lq, lp = local[:, :, 0], local[:, :, 1]
        for j in reversed(range(C)):
            _, h_k, w, e = co.at(j)
            lq.add_(g[:, :, j, 0])
            lp.add_(g[:, :, j, 1])
            lp.mul_(e)
            lq.addcmul_(h_k, lp, value=-1.0)
            lp.addcmul_(w, lq)
            lq.addcmul_(h_k, lp, value=-1.0)
            lp.mul_(e)
        # 2. Carry between chunks, last to first, through the transposed chunk transfers.
        entering = _carry(nu, transfer, local, transpose=True)
    # 3. Rerun every chunk backwards: rebuild the step's momenta p2 (after the first kick) and
    #    p3 (before the last half damping) from the saved states, then reverse mode through
    #    p1 = e p0; p2 = p1 + h(f − k q0); q1 = q0 + w p2; p3 = p2 + h(f − k q1); p4 = e p3.
    prev0 = torch.cat((start[:, None], qp[:, :-1, C - 1]), dim=1)  # (B, n, 2, D)
    lam_q, lam_p = entering[:, :, 0], entering[:, :, 1]
    p2, p3, g_p2, g_p3, g_e, g_w, s_k, g_h, tmp = (torch.empty_like(lam_q) for _ in range(9))
    for j in reversed(range(C)):
        h, h_k, w, e = co.at(j)
        dt, gamma = _at(co.dt, j), _at(co.gamma, j)
        lam_q.add_(g[:, :, j, 0])  # λ_t = g_t + ν_{t+1}
        lam_p.add_(g[:, :, j, 1])
        prev = qp[:, :, j - 1] if j > 0 else prev0
        q0, p0, q1, fj = prev[:, :, 0], prev[:, :, 1], qp[:, :, j, 0], f[:, :, j]
        torch.mul(e, p0, out=p2).addcmul_(h, fj).addcmul_(h_k, q0, value=-1.0)
        torch.addcmul(p2, h, fj, out=p3).addcmul_(h_k, q1, value=-1.0)
        torch.mul(e, lam_p, out=g_p3)  # ∂L/∂p3
        torch.mul(lam_p, p3, out=g_e)  # ∂L/∂e (damping at the end) ...
        g_q1 = lam_q.addcmul_(h_k, g_p3, value=-1.0)  # ∂L/∂q1 (λ_q is not needed again)
        torch.addcmul(g_p3, w, g_q1, out=g_p2)  # ∂L/∂p2
        g_e.addcmul_(g_p2, p0)  # ... and at the start
        torch.mul(g_q1, p2, out=g_w)  # ∂L/∂w
        torch.mul(g_p3, q1, out=s_k).addcmul_(g_p2, q0)  # ∂L/∂(hk) = −s_k
        g_hf = g_p3.add_(g_p2)  # ∂L/∂(h f)
        torch.mul(h, g_hf, out=grad_f[:, :, j])
        torch.mul(fj, g_hf, out=g_h).addcmul_(k, s_k, value=-1.0)  # ∂L/∂h
        grads["k"].addcmul_(h, s_k, value=-1.0)
        grads["m"].addcmul_(g_w, dt)  # times −1/m² at the end
        # chain rule through h = Δ/2, w = Δ/m, e = exp(−γΔ/2)
        torch.mul(gamma, e, out=tmp)
        g_dt = g_h.mul_(0.5).addcmul_(g_w, inv_m).addcmul_(tmp, g_e, value=-0.5)
        g_gamma = g_e.mul_(e).mul_(dt).mul_(-0.5)
        for name, value in (("dt", g_dt), ("gamma", g_gamma)):
            target = grads[name]
            if target.dim() == 4:  # varies in time: chunk view of the full gradient
                _store(_at(target, j), value)
            else:
                target.add_(value)
        # ν_t = Aᵀ λ_t, handed to the previous position
        lam_q = g_q1.addcmul_(h_k, g_p2, value=-1.0)
        lam_p, g_p2 = g_p2.mul_(e), lam_p
    return torch.stack((lam_q[:, 0], lam_p[:, 0]), dim=1)


class _VaryingScan(torch.autograd.Function):
    """Chunked scan in leapfrog form for time-varying Δ or γ; saves f, Δ, γ, e and the states."""

    @staticmethod
    def forward(ctx, f, dt, gamma, k, m, state, chunk_size):
        B, L, D = f.shape
        qp = f.new_empty((B, L, 2, D))
        e = f.new_empty(torch.broadcast_shapes(dt.shape, gamma.shape))
        s, transfers = state, []
        for lo, hi, size in _cuts(L, chunk_size):
            co = _Varying(dt, gamma, e, k, m, lo, hi, size)
            s, transfer = _forward_varying(
                co, _blocks(f, lo, hi, size), _blocks(qp, lo, hi, size), s
            )
            transfers.append(transfer)
        ctx.chunk_size = chunk_size
        ctx.transfers = transfers  # (B, L/C, D)-sized, computed without grad
        ctx.save_for_backward(f, dt, gamma, e, k, m, state, qp)
        return qp, s.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_qp, g_final):
        f, dt, gamma, e, k, m, state, qp = ctx.saved_tensors
        B, L, D = f.shape
        g_qp = torch.zeros_like(qp) if g_qp is None else g_qp
        nu = torch.zeros_like(state) if g_final is None else g_final.clone()
        grad_f = torch.empty_like(f)
        # time-varying gradients are written at every position; constant ones are sums
        full = {
            name: torch.empty_like(x) if x.shape[1] > 1 else torch.zeros_like(x)
            for name, x in (("dt", dt), ("gamma", gamma))
        }
        grad_k, grad_m = torch.zeros_like(k), torch.zeros_like(m)
        cuts = _cuts(L, ctx.chunk_size)
        for (lo, hi, size), transfer in reversed(list(zip(cuts, ctx.transfers))):
            co = _Varying(dt, gamma, e, k, m, lo, hi, size)
            shape = (B, co.h.shape[1], D)
            grads = {"k": f.new_zeros(shape), "m": f.new_zeros(shape)}
            for name, x in (("dt", dt), ("gamma", gamma)):
                grads[name] = (
                    _blocks(full[name], lo, hi, size) if x.shape[1] > 1 else f.new_zeros(shape)
                )
            start = state if lo == 0 else qp[:, lo - 1]
            nu = _backward_varying(
                co,
                *(_blocks(x, lo, hi, size) for x in (f, qp, g_qp, grad_f)),
                start,
                nu,
                grads,
                transfer,
            )
            for name, x in (("dt", dt), ("gamma", gamma)):
                if x.shape[1] == 1:
                    full[name].add_(grads[name].sum_to_size(x.shape))
            grad_k.add_(grads["k"].sum(dim=(0, 1)))
            grad_m.add_(grads["m"].sum(dim=(0, 1)))
        grad_m.mul_(-1.0 / (m * m))
        return grad_f, full["dt"], full["gamma"], grad_k, grad_m, nu, None


def scan_chunked(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Evolve the oscillators chunk by chunk; same arguments and results as ``scan_ref``.

    1. Cut the sequence into chunks of length C (a ragged tail is one short chunk) and, for all
       chunks at once, one position at a time, find each chunk's local response to its forcing
       from a zero state and its transfer matrix. With Δ and γ constant in time the step is one
       matrix A per channel: the local response is Σ_j A^{C−1−j} b f_j (a table of C powers)
       and the transfer is A^C; otherwise the leapfrog runs from zero and from the unit states.
    2. Carry the state between chunks: entering_c = P_{c−1} entering_{c−1} + local_{c−1}.
    3. Rerun every chunk from the state entering it, writing all states.

    That is C + L/C Python-level steps over (B, L/C, D) and (B, D) slices instead of L. The
    backward runs the same three steps on the adjoint recurrence ν_t = A_tᵀ(g_t + ν_{t+1}),
    backwards in time, with hand-written gradients. Memory: the states (B, L, 2, D), plus e
    (B, L, D) when Δ or γ vary in time, plus (B, L/C, 2, D) carries; nothing of size L×L or
    D×D. Equal to ``scan_ref`` to round-off (tested: outputs, final states and gradients).

    Parameters
    ----------
    f, dt, gamma, k, m, state
        As in ``scan_ref``.
    chunk_size : int
        Chunk length C ≥ 1.

    Returns
    -------
    qp : Tensor
        (B, L, D, 2), the state after each step (a transposed view of planar storage).
    final_state : Tensor
        (B, D, 2).
    """
    if int(chunk_size) < 1:
        raise ValueError(f"scan_chunked: chunk_size must be >= 1, got {chunk_size}")
    f, dt, gamma, k, m, state, out_dtype = _prepare(f, dt, gamma, k, m, state)
    B, L, D = f.shape
    if L == 0:
        return f.new_zeros((B, 0, D, 2)).to(out_dtype), state.to(out_dtype)
    planar = state.transpose(1, 2)  # (B, 2, D)
    if dt.shape[1] == 1 and gamma.shape[1] == 1:
        coef = _matrix_entries(dt, gamma, k, m)  # each (B or 1, 1, D)
        qp, final = _ConstantScan.apply(*coef, f, planar, int(chunk_size))
    else:
        qp, final = _VaryingScan.apply(f, dt, gamma, k, m, planar, int(chunk_size))
    return qp.transpose(2, 3).to(out_dtype), final.transpose(1, 2).to(out_dtype)


def _triton_scan():
    """Return ``scan_triton`` when ``hamfin.core.scan_triton`` imports with triton, else None."""
    try:
        from hamfin.core.scan_triton import HAS_TRITON, scan_triton
    except ImportError:
        return None
    return scan_triton if HAS_TRITON else None


def scan(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Run the HML-D scan with the fastest implementation for the device.

    CUDA tensors go to ``scan_triton`` (fused kernels) when ``hamfin.core.scan_triton`` imports
    and triton is available; everything else to ``scan_chunked``. Same arguments and results as
    ``scan_ref``, the specification both are tested against.
    """
    if isinstance(f, Tensor) and f.is_cuda:
        fused = _triton_scan()
        if fused is not None:
            return fused(f, dt, gamma, k, m, state, chunk_size=chunk_size)
    return scan_chunked(f, dt, gamma, k, m, state, chunk_size=chunk_size)
