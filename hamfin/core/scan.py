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
    dt = dt.expand(B, L, D)
    gamma = gamma.expand(B, L, D)
    q, p = state[..., 0], state[..., 1]  # (B, D) each
    steps = []
    for t in range(L):
        d, ft = dt[:, t], f[:, t]
        e = torch.exp(-0.5 * gamma[:, t] * d)
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


def scan_chunked(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Placeholder until the chunked scan lands: the reference (same signature and results)."""
    return scan_ref(f, dt, gamma, k, m, state, chunk_size=chunk_size)


def scan(f, dt, gamma, k, m, state=None, *, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatch: ``scan_triton`` for CUDA tensors when available, else ``scan_chunked``."""
    return scan_chunked(f, dt, gamma, k, m, state, chunk_size=chunk_size)
