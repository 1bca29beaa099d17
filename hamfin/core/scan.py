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
# ----------------------------------------------------------------------------------------------


def _blocks(x: Tensor, lo: int, hi: int, size: int) -> Tensor:
    """View ``x[:, lo:hi]`` as chunks (B, n, size, ...); a time-constant x (L-dim 1) as (B, 1, 1, ...)."""
    if x.shape[1] == 1:
        return x.unsqueeze(2)
    return x[:, lo:hi].unflatten(1, (-1, size))


def _at(blocks: Tensor, j: int) -> Tensor:
    """Position ``j`` of every chunk: (B, n, D), or (B, 1, D) for a time-constant tensor."""
    return blocks[:, :, j if blocks.shape[2] > 1 else 0]


def _coefficients(dt: Tensor, gamma: Tensor, k: Tensor, m: Tensor):
    """Return the step's coefficients h = Δ/2, h·k, w = Δ/m, e = exp(−γΔ/2) (elementwise)."""
    h = 0.5 * dt
    return h, h * k, dt / m, torch.exp(-h * gamma)


class _Segment:
    """One stretch of the sequence cut into n chunks of length C (the ragged tail is n = 1).

    Holds chunk views of the inputs and the output, and the per-position coefficients (computed
    once when Δ and γ are constant in time, else recomputed per position: cheaper than storing).
    """

    def __init__(self, f, dt, gamma, k, m, qp, lo, hi, size):
        self.f = _blocks(f, lo, hi, size)  # (B, n, C, D)
        self.qp = _blocks(qp, lo, hi, size)  # (B, n, C, D, 2)
        self.dt, self.gamma = _blocks(dt, lo, hi, size), _blocks(gamma, lo, hi, size)
        self.k, self.m = k, m
        self.n, self.size = self.f.shape[1], size
        self.lo, self.hi = lo, hi
        self._constant = None
        if dt.shape[1] == 1 and gamma.shape[1] == 1:
            self._constant = _coefficients(self.dt[:, :, 0], self.gamma[:, :, 0], k, m)

    def coefficients(self, j: int):
        """Return (h, h·k, w, e) at position ``j`` of every chunk, each broadcastable to (B, n, D)."""
        if self._constant is not None:
            return self._constant
        return _coefficients(_at(self.dt, j), _at(self.gamma, j), self.k, self.m)


def _leapfrog_(q: Tensor, p: Tensor, h_k: Tensor, w: Tensor, e: Tensor, hf: Tensor, forced: Tensor):
    """Advance (q, p) in place by one conformal leapfrog step.

    ``hf`` = h·f is the forcing impulse of one half kick; it is added to ``forced``, a view of
    ``p`` (all of it, or the slot of a stack that carries the forced response).
    """
    p.mul_(e)  # half damping
    p.addcmul_(h_k, q, value=-1.0)  # half kick: potential ...
    forced.add_(hf)  # ... and forcing
    q.addcmul_(w, p)  # drift
    p.addcmul_(h_k, q, value=-1.0)  # half kick
    forced.add_(hf)
    p.mul_(e)  # half damping


def _adjoint_(lq: Tensor, lp: Tensor, h_k: Tensor, w: Tensor, e: Tensor) -> None:
    """Apply Aᵀ in place to the adjoint (lq, lp): the leapfrog's substeps transposed, reversed."""
    lp.mul_(e)
    lq.addcmul_(h_k, lp, value=-1.0)
    lp.addcmul_(w, lq)
    lq.addcmul_(h_k, lp, value=-1.0)
    lp.mul_(e)


def _forward_segment(seg: _Segment, q0: Tensor, p0: Tensor):
    """Advance the start state (q0, p0), (B, D), through ``seg``; write every state into seg.qp.

    Returns the final (q, p), (B, D) each, and the chunk transfer matrices (4, B, n, D) as
    columns (Pq1, Pp1, Pq2, Pp2) for the backward (None when n == 1).
    """
    B, n, C, D = seg.f.shape
    transfer = None
    if n == 1:
        start_q, start_p = q0[:, None].clone(), p0[:, None].clone()  # (B, 1, D)
    else:
        # 1. Inside every chunk at once, from a zero state: the local response to the forcing
        #    (slot 0) and the chunk's transfer matrix, column by column (slots 1, 2: unforced).
        q = seg.f.new_zeros((3, B, n, D))
        p = seg.f.new_zeros((3, B, n, D))
        q[1], p[2] = 1.0, 1.0
        for j in range(C):
            h, h_k, w, e = seg.coefficients(j)
            _leapfrog_(q, p, h_k, w, e, h * seg.f[:, :, j], p[0])
        transfer = torch.stack((q[1], p[1], q[2], p[2]))  # (4, B, n, D)
        # 2. Carry between chunks: the start state of chunk c is P_{c-1} start_{c-1} + local_{c-1}.
        start_q, start_p = seg.f.new_empty((B, n, D)), seg.f.new_empty((B, n, D))
        cq, cp = q0, p0
        for c in range(n):
            start_q[:, c], start_p[:, c] = cq, cp
            cq, cp = (
                q[1, :, c] * cq + q[2, :, c] * cp + q[0, :, c],
                p[1, :, c] * cq + p[2, :, c] * cp + p[0, :, c],
            )
    # 3. Rerun every chunk from its true start state, writing the states.
    q, p = start_q, start_p  # (B, n, D), owned
    for j in range(C):
        h, h_k, w, e = seg.coefficients(j)
        _leapfrog_(q, p, h_k, w, e, h * seg.f[:, :, j], p)
        seg.qp[:, :, j, :, 0] = q
        seg.qp[:, :, j, :, 1] = p
    return q[:, -1], p[:, -1], transfer


def _backward_segment(
    seg: _Segment, g: Tensor, start: Tensor, transfer, lq: Tensor, lp: Tensor, grads: dict
):
    """Run the adjoint recurrence backwards through ``seg`` and accumulate parameter gradients.

    The adjoint of s_t = A_t s_{t-1} + u_t is λ_t = g_t + A_{t+1}ᵀ λ_{t+1}; with ν_t = A_tᵀ λ_t
    it is again a linear recurrence, ν_t = A_tᵀ(g_t + ν_{t+1}), chunked like the forward (the
    chunk transfer of ν is the transpose of the forward's). ``g`` is the gradient of the states
    (B, L, D, 2); ``start`` the segment's start state (B, D, 2); (lq, lp), (B, D), is ν at the
    segment's end. Returns ν at the segment's start.
    """
    B, n, C, D = seg.f.shape
    g = _blocks(g, seg.lo, seg.hi, C)  # (B, n, C, D, 2)
    if n == 1:
        in_q, in_p = lq[:, None].clone(), lp[:, None].clone()  # (B, 1, D)
    else:
        # 1. Inside every chunk at once, from a zero adjoint at the chunk's end: the local ν.
        nq, np_ = seg.f.new_zeros((B, n, D)), seg.f.new_zeros((B, n, D))
        for j in reversed(range(C)):
            _, h_k, w, e = seg.coefficients(j)
            nq.add_(g[:, :, j, :, 0])
            np_.add_(g[:, :, j, :, 1])
            _adjoint_(nq, np_, h_k, w, e)
        # 2. Carry between chunks, last to first, through the transposed chunk transfers.
        pq1, pp1, pq2, pp2 = transfer
        in_q, in_p = seg.f.new_empty((B, n, D)), seg.f.new_empty((B, n, D))
        cq, cp = lq, lp
        for c in reversed(range(n)):
            in_q[:, c], in_p[:, c] = cq, cp
            cq, cp = (
                pq1[:, c] * cq + pp1[:, c] * cp + nq[:, c],
                pq2[:, c] * cq + pp2[:, c] * cp + np_[:, c],
            )
    # 3. Rerun every chunk backwards from its true incoming adjoint; at each position rebuild the
    #    leapfrog's intermediate momenta from the saved states and accumulate the gradients.
    prev0 = torch.cat((start[:, None], seg.qp[:, :-1, C - 1]), dim=1)  # (B, n, D, 2)
    k, m = seg.k, seg.m
    grad_f = _blocks(grads["f"], seg.lo, seg.hi, C)  # (B, n, C, D)
    # Time-varying Δ, γ get their gradient stored per position; constant ones (and k, m) are
    # summed over positions in (B, n, D) buffers, reduced once at the end.
    stored = {
        name: _blocks(grads[name], seg.lo, seg.hi, C)
        for name in ("dt", "gamma")
        if grads[name].shape[1] > 1
    }
    summed = {
        name: seg.f.new_zeros((B, n, D)) for name in ("dt", "gamma", "k", "m") if name not in stored
    }
    lam_q, lam_p = in_q, in_p
    for j in reversed(range(C)):
        h, h_k, w, e = seg.coefficients(j)
        dt, gamma = _at(seg.dt, j), _at(seg.gamma, j)
        lam_q.add_(g[:, :, j, :, 0])  # λ_t = g_t + ν_{t+1}
        lam_p.add_(g[:, :, j, :, 1])
        prev = seg.qp[:, :, j - 1] if j > 0 else prev0
        q0, p0, q1 = prev[..., 0], prev[..., 1], seg.qp[:, :, j, :, 0]
        f = seg.f[:, :, j]
        hf = h * f
        p2 = torch.addcmul(hf, h_k, q0, value=-1.0).addcmul_(e, p0)  # after the first kick
        p3 = torch.addcmul(hf, h_k, q1, value=-1.0).add_(p2)  # after the second kick
        # reverse mode through the five substeps (see the module docstring)
        g_p3 = e * lam_p
        g_e = lam_p * p3
        g_q1 = torch.addcmul(lam_q, h_k, g_p3, value=-1.0)
        g_p2 = torch.addcmul(g_p3, w, g_q1)
        g_e.addcmul_(g_p2, p0)
        g_w = g_q1 * p2
        g_hk = torch.mul(g_p3, q1).addcmul_(g_p2, q0).neg_()
        g_hf = g_p3.add_(g_p2)
        grad_f[:, :, j] = h * g_hf
        g_h = torch.mul(f, g_hf).addcmul_(k, g_hk)
        summed["k"].addcmul_(h, g_hk)
        summed["m"].addcmul_(g_w, dt)  # times −1/m² at the end
        # chain rule through h = Δ/2, w = Δ/m, e = exp(−γΔ/2)
        g_dt = torch.addcmul(0.5 * g_h, g_w, 1.0 / m).addcmul_(g_e, e * (-0.5 * gamma))
        g_gamma = g_e.mul_(e * (-0.5 * dt))
        for name, value in (("dt", g_dt), ("gamma", g_gamma)):
            if name in stored:
                target = _at(stored[name], j)
                target.copy_(value.sum_to_size(target.shape))
            else:
                summed[name].add_(value)
        # ν_t = A_tᵀ λ_t, the adjoint handed to the previous position
        lam_q = torch.addcmul(g_q1, h_k, g_p2, value=-1.0)
        lam_p = g_p2.mul_(e)
    for name, value in summed.items():
        grads[name].add_(
            value.sum_to_size(grads[name].shape)
            if name in ("dt", "gamma")
            else value.sum(dim=(0, 1))
        )
    return lam_q[:, 0], lam_p[:, 0]


def _segments(f, dt, gamma, k, m, qp, size: int) -> list[_Segment]:
    """Cut [0, L) into whole chunks of ``size`` and a ragged tail (one short chunk)."""
    L = f.shape[1]
    whole = L // size * size
    segments = []
    if whole:
        segments.append(_Segment(f, dt, gamma, k, m, qp, 0, whole, size))
    if whole < L:
        segments.append(_Segment(f, dt, gamma, k, m, qp, whole, L, L - whole))
    return segments


class _ChunkedScan(torch.autograd.Function):
    """Chunked forward and hand-written adjoint; saves f, the parameters and the states only."""

    @staticmethod
    def forward(ctx, f, dt, gamma, k, m, state, chunk_size):
        B, L, D = f.shape
        qp = f.new_empty((B, L, D, 2))
        q, p = state[..., 0], state[..., 1]
        transfers = []
        for seg in _segments(f, dt, gamma, k, m, qp, chunk_size):
            q, p, transfer = _forward_segment(seg, q, p)
            transfers.append(transfer)
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(f, dt, gamma, k, m, state, qp, *transfers)
        return qp, torch.stack((q, p), dim=-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_qp, g_final):
        f, dt, gamma, k, m, state, qp, *transfers = ctx.saved_tensors
        g_qp = torch.zeros_like(qp) if g_qp is None else g_qp
        g_final = torch.zeros_like(state) if g_final is None else g_final
        grads = {
            "f": torch.empty_like(f),
            "dt": torch.zeros_like(dt),
            "gamma": torch.zeros_like(gamma),
            "k": torch.zeros_like(k),
            "m": torch.zeros_like(m),
        }
        lq, lp = g_final[..., 0].clone(), g_final[..., 1].clone()  # ν after the last step
        segments = _segments(f, dt, gamma, k, m, qp, ctx.chunk_size)
        for seg, transfer in reversed(list(zip(segments, transfers))):
            start = state if seg.lo == 0 else qp[:, seg.lo - 1]
            lq, lp = _backward_segment(seg, g_qp, start, transfer, lq, lp, grads)
        grads["m"].mul_(-1.0 / (m * m))
        g_state = torch.stack((lq, lp), dim=-1)
        return grads["f"], grads["dt"], grads["gamma"], grads["k"], grads["m"], g_state, None


def scan_chunked(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Evolve the oscillators chunk by chunk; same arguments and results as ``scan_ref``.

    All chunks of length ``chunk_size`` advance together, one position at a time (C Python steps
    over (B, L/C, D) slices), then a carry passes between chunks (L/C steps over (B, D)), then
    every chunk is rerun from its true start state. The backward is the same scheme run on the
    adjoint recurrence, backwards in time. Memory: the states (B, L, D, 2) plus the chunk transfer
    matrices (4·B·L/C·D); nothing of size L×L or D×D. Numerically equal to ``scan_ref`` to
    round-off (tested for outputs, final states and gradients).

    Parameters
    ----------
    f, dt, gamma, k, m, state
        As in ``scan_ref``.
    chunk_size : int
        Chunk length C ≥ 1. A length L that is not a multiple of C ends with one short chunk.

    Returns
    -------
    qp : Tensor
        (B, L, D, 2), the state after each step.
    final_state : Tensor
        (B, D, 2).
    """
    if int(chunk_size) < 1:
        raise ValueError(f"scan_chunked: chunk_size must be >= 1, got {chunk_size}")
    f, dt, gamma, k, m, state, out_dtype = _prepare(f, dt, gamma, k, m, state)
    B, L, D = f.shape
    if L == 0:
        return f.new_zeros((B, 0, D, 2)).to(out_dtype), state.to(out_dtype)
    qp, final = _ChunkedScan.apply(f, dt, gamma, k, m, state, int(chunk_size))
    return qp.to(out_dtype), final.to(out_dtype)


def scan(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatch: ``scan_triton`` for CUDA tensors when available, else ``scan_chunked``."""
    return scan_chunked(f, dt, gamma, k, m, state, chunk_size=chunk_size)
