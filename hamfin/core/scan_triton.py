"""Fused Triton kernels for the HML-D 2×2 scan, forward and backward.

The recurrence is HMLD.md's conformal leapfrog with quadratic potential, for one channel

    s_t = A_t s_{t-1} + b_t f_t,   s = (q, p),   a = Δ²k/(2m),   e = exp(-γΔ/2)
    A_t = [[1 - a, Δe/m], [-eΔk(1 - a/2), e²(1 - a)]],   b_t = [Δ²/(2m), eΔ(1 - a/2)]ᵀ

with Δ = dt and γ = gamma either per channel (D,) or per step (B, L, D). The reference is
``hamfin.core.scan.scan_ref`` (a plain loop over time); this module must agree with it.

Design (why each piece is there):

1. Transitions never touch memory. Every program loads Δ_t, γ_t (stride 0 when they are per
   channel), k, m and f_t, and builds A_t, b_t in registers.
2. Forward, one pass (``_fwd_kernel``): grid (B, ⌈D/BLOCK_D⌉, segments). A program owns
   BLOCK_D channels of one sequence and walks time in chunks of CHUNK steps. Inside a chunk the
   CHUNK affine maps (A_t, b_t f_t) are composed by ``tl.associative_scan`` (a (CHUNK, BLOCK_D)
   tile, coalesced along D), then applied to the carry; the last row becomes the next carry.
   When a gradient is needed (``STORE_BND``) it also writes the state at every chunk start:
   the only state the backward keeps (8 bytes per CHUNK steps per channel, fp32).
3. Forward, segmented (few sequences, small B·D, e.g. L = 2^20 with B·D = 1024): L is cut into
   segments processed in parallel. Pass 1 (``_seg_summary_kernel``) composes each segment's
   maps into one affine map (2×2 matrix, 2-vector: its zero-start end state); pass 2
   (``_seg_carry_kernel``) scans those maps over segments to get each segment's true start
   state; pass 3 is ``_fwd_kernel`` again with one program per segment. ``_Plan`` picks it when
   B·⌈D/BLOCK_D⌉ programs would not cover the GPU's multiprocessors.
4. Backward (``_bwd_kernel``): grid (B, ⌈D/BLOCK_D⌉, segments), chunks in reverse order. Per
   chunk it recomputes the states s_{t-1} from the saved chunk-start state (a forward scan of
   the maps at t-1), runs the adjoint λ_t = A_{t+1}ᵀ λ_{t+1} + ∂L/∂s_t as a scan over a
   row-reversed tile (``associative_scan(reverse=True)`` is avoided: it mis-orders
   non-commutative combines on some Triton versions, triton-lang/triton#4362), flips λ back with
   ``tl.flip``, and forms ∂L/∂f_t = b_t·λ_t and ∂L/∂A_t = λ_t s_{t-1}ᵀ, ∂L/∂b_t = λ_t f_t,
   chained analytically into Δ, γ, k, m. Per-channel parameters are reduced inside the program
   (over rows and chunks), then over B and segments on the host. With several segments the
   adjoint entering each one comes from the same three-pass scheme run backwards
   (``_bwd_summary_kernel``, ``_seg_carry_kernel(REVERSE=True)``).

Memory traffic per (b, t, d) step, fp32, per-channel Δ and γ. Forward: read f (4 bytes), write
q, p (8 bytes) = 12 bytes (selective Δ, γ: + 8 read); saved boundaries add 8/CHUNK bytes.
The segmented forward reads f twice (16 bytes). Backward: read f and ∂L/∂(q, p), write ∂L/∂f =
16 bytes (selective: + 8 read, + 8 written); the segmented backward reads ∂L/∂(q, p) twice
(+8). ``gpu_figures`` times a device copy moving exactly the forward's bytes as the floor.

Precision: the state and all arithmetic are fp32 (fp64 when the promoted input dtype is fp64);
fp16/bf16 inputs are upcast on load and the outputs cast back to the promoted input dtype (as
``scan_ref``). Everything here is untuned: no timing has been taken on a GPU yet.
"""

from __future__ import annotations

import functools
import math
import statistics

import torch

try:  # triton is optional: CPU-only installs fall back to scan_chunked in ``scan`` dispatch
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised by a subprocess test
    triton = None
    tl = None
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "gpu_figures", "scan_triton"]

_DEFAULT_BLOCK_D = 32
_NUM_WARPS = 4  # forward; not tuned on a GPU yet
# FMA contraction stays on (Triton 3.9's default, made explicit: 3.10 turns it off).
_NUM_WARPS_BWD = 8  # the backward keeps ~2x more (CHUNK, BLOCK_D) tiles live; not tuned either

if HAS_TRITON:

    @triton.jit
    def _transition(dt, gm, k, m):
        """Return A_t (a11, a12, a21, a22) and b_t (b1, b2) elementwise."""
        e = tl.exp(-0.5 * gm * dt)
        a = 0.5 * dt * dt * k / m
        h = 1.0 - 0.5 * a
        a11 = 1.0 - a
        a12 = dt * e / m
        a21 = -e * dt * k * h
        a22 = e * e * a11
        b1 = 0.5 * dt * dt / m
        b2 = e * dt * h
        return a11, a12, a21, a22, b1, b2

    @triton.jit
    def _compose(a11, a12, a21, a22, u1, u2, b11, b12, b21, b22, v1, v2):
        """Compose affine maps: apply (A, u) first, then (B, v): (B A, B u + v)."""
        c11 = b11 * a11 + b12 * a21
        c12 = b11 * a12 + b12 * a22
        c21 = b21 * a11 + b22 * a21
        c22 = b21 * a12 + b22 * a22
        w1 = b11 * u1 + b12 * u2 + v1
        w2 = b21 * u1 + b22 * u2 + v2
        return c11, c12, c21, c22, w1, w2

    @triton.jit
    def _last_row(x, rows, CHUNK: tl.constexpr):
        """Row CHUNK-1 of a (CHUNK, BLOCK_D) tile as a (BLOCK_D,) vector (exact)."""
        return tl.sum(tl.where(rows[:, None] == CHUNK - 1, x, 0.0), axis=0)

    @triton.jit
    def _load_param(
        ptr, b, t, d64, mask, s_b, s_t, s_d, vec, CT: tl.constexpr, PER_CHANNEL: tl.constexpr
    ):
        """Δ or γ on a (CHUNK, BLOCK_D) tile; 0 where masked (0 makes A = I, b = 0)."""
        if PER_CHANNEL:
            out = tl.where(mask, vec[None, :], 0.0)
        else:
            off = b * s_b + t[:, None].to(tl.int64) * s_t + d64[None, :] * s_d  # int64: L·D > 2³¹
            out = tl.load(ptr + off, mask=mask, other=0.0).to(CT)
        return out

    @triton.jit
    def _load_channel(ptr, d64, dmask, s_d, CT: tl.constexpr, PER_CHANNEL: tl.constexpr):
        """Δ or γ as a (BLOCK_D,) vector when per channel (zeros otherwise, unused)."""
        if PER_CHANNEL:
            out = tl.load(ptr + d64 * s_d, mask=dmask, other=0.0).to(CT)
        else:
            out = tl.zeros(d64.shape, CT)
        return out

    @triton.jit
    def _fwd_kernel(
        f_ptr, dt_ptr, gm_ptr, k_ptr, m_ptr,  # inputs
        start_ptr, qp_ptr, bnd_ptr, end_ptr,  # (B,NSEG,D,2) (B,L,D,2) (B,NCHUNK,D,2) (B,NSEG,D,2)
        L, D, SEG_LEN, NSEG, NCHUNK,
        dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
        DT_PC: tl.constexpr, GM_PC: tl.constexpr, STORE_BND: tl.constexpr,
    ):  # fmt: skip
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        pid_s = tl.program_id(2)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < D
        d64 = d.to(tl.int64)
        rows = tl.arange(0, CHUNK)
        kk = tl.load(k_ptr + d64, mask=dmask, other=1.0)
        mm = tl.load(m_ptr + d64, mask=dmask, other=1.0)
        CT: tl.constexpr = kk.dtype
        dtv = _load_channel(dt_ptr, d64, dmask, dt_sd, CT, DT_PC)
        gmv = _load_channel(gm_ptr, d64, dmask, gm_sd, CT, GM_PC)
        st = ((pid_b * NSEG + pid_s) * D + d64) * 2
        q = tl.load(start_ptr + st, mask=dmask, other=0.0)
        p = tl.load(start_ptr + st + 1, mask=dmask, other=0.0)
        t_begin = pid_s * SEG_LEN
        t_end = tl.minimum(t_begin + SEG_LEN, L)
        two = tl.arange(0, 2)
        for t0 in range(t_begin, t_end, CHUNK):
            if STORE_BND:
                bo = ((pid_b * NCHUNK + t0 // CHUNK) * D + d64) * 2
                tl.store(bnd_ptr + bo, q, mask=dmask)
                tl.store(bnd_ptr + bo + 1, p, mask=dmask)
            t = t0 + rows
            msk = (t < t_end)[:, None] & dmask[None, :]
            off = (pid_b * L + t[:, None]) * D + d64[None, :]  # (CHUNK, BLOCK_D) int64
            fv = tl.load(f_ptr + off, mask=msk, other=0.0).to(CT)
            dt = _load_param(dt_ptr, pid_b, t, d64, msk, dt_sb, dt_st, dt_sd, dtv, CT, DT_PC)
            gm = _load_param(gm_ptr, pid_b, t, d64, msk, gm_sb, gm_st, gm_sd, gmv, CT, GM_PC)
            a11, a12, a21, a22, b1, b2 = _transition(dt, gm, kk[None, :], mm[None, :])
            p11, p12, p21, p22, u1, u2 = tl.associative_scan(
                (a11, a12, a21, a22, b1 * fv, b2 * fv), 0, _compose
            )
            qn = p11 * q[None, :] + p12 * p[None, :] + u1
            pn = p21 * q[None, :] + p22 * p[None, :] + u2
            qp = tl.join(qn, pn).to(qp_ptr.dtype.element_ty)  # (CHUNK, BLOCK_D, 2)
            tl.store(qp_ptr + off[:, :, None] * 2 + two[None, None, :], qp, mask=msk[:, :, None])
            q = _last_row(qn, rows, CHUNK)
            p = _last_row(pn, rows, CHUNK)
        tl.store(end_ptr + st, q, mask=dmask)
        tl.store(end_ptr + st + 1, p, mask=dmask)

    @triton.jit
    def _seg_summary_kernel(
        f_ptr, dt_ptr, gm_ptr, k_ptr, m_ptr, summ_ptr,  # summ: (B, NSEG, D, 6)
        L, D, SEG_LEN, NSEG,
        dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, DT_PC: tl.constexpr, GM_PC: tl.constexpr,
    ):  # fmt: skip
        """Pass 1: each segment's composed map (P, u); u is its zero-start end state."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        pid_s = tl.program_id(2)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < D
        d64 = d.to(tl.int64)
        rows = tl.arange(0, CHUNK)
        kk = tl.load(k_ptr + d64, mask=dmask, other=1.0)
        mm = tl.load(m_ptr + d64, mask=dmask, other=1.0)
        CT: tl.constexpr = kk.dtype
        dtv = _load_channel(dt_ptr, d64, dmask, dt_sd, CT, DT_PC)
        gmv = _load_channel(gm_ptr, d64, dmask, gm_sd, CT, GM_PC)
        one = tl.full((BLOCK_D,), 1.0, CT)
        zero = tl.zeros((BLOCK_D,), CT)
        s11, s12, s21, s22, w1, w2 = one, zero, zero, one, zero, zero
        t_begin = pid_s * SEG_LEN
        t_end = tl.minimum(t_begin + SEG_LEN, L)
        for t0 in range(t_begin, t_end, CHUNK):
            t = t0 + rows
            msk = (t < t_end)[:, None] & dmask[None, :]
            off = (pid_b * L + t[:, None]) * D + d64[None, :]
            fv = tl.load(f_ptr + off, mask=msk, other=0.0).to(CT)
            dt = _load_param(dt_ptr, pid_b, t, d64, msk, dt_sb, dt_st, dt_sd, dtv, CT, DT_PC)
            gm = _load_param(gm_ptr, pid_b, t, d64, msk, gm_sb, gm_st, gm_sd, gmv, CT, GM_PC)
            a11, a12, a21, a22, b1, b2 = _transition(dt, gm, kk[None, :], mm[None, :])
            c11, c12, c21, c22, v1, v2 = tl.associative_scan(
                (a11, a12, a21, a22, b1 * fv, b2 * fv), 0, _compose
            )
            s11, s12, s21, s22, w1, w2 = _compose(
                s11, s12, s21, s22, w1, w2,
                _last_row(c11, rows, CHUNK), _last_row(c12, rows, CHUNK),
                _last_row(c21, rows, CHUNK), _last_row(c22, rows, CHUNK),
                _last_row(v1, rows, CHUNK), _last_row(v2, rows, CHUNK),
            )  # fmt: skip
        so = ((pid_b * NSEG + pid_s) * D + d64) * 6
        tl.store(summ_ptr + so, s11, mask=dmask)
        tl.store(summ_ptr + so + 1, s12, mask=dmask)
        tl.store(summ_ptr + so + 2, s21, mask=dmask)
        tl.store(summ_ptr + so + 3, s22, mask=dmask)
        tl.store(summ_ptr + so + 4, w1, mask=dmask)
        tl.store(summ_ptr + so + 5, w2, mask=dmask)

    @triton.jit
    def _seg_carry_kernel(
        s0_ptr, summ_ptr, start_ptr,  # (B, D, 2), (B, NSEG, D, 6), out (B, NSEG, D, 2)
        D, NSEG, BLOCK_D: tl.constexpr, REVERSE: tl.constexpr,
    ):  # fmt: skip
        """Pass 2: every segment's true incoming carry (a short sequential scan over segments).

        Forward: the state at each segment's start, from ``s0``. Reverse (backward): the adjoint
        entering each segment from its right, from zero. Segment s's map is ``summ[:, s]``.
        """
        pid_b = tl.program_id(0).to(tl.int64)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < D
        d64 = d.to(tl.int64)
        q = tl.load(s0_ptr + (pid_b * D + d64) * 2, mask=dmask, other=0.0)
        p = tl.load(s0_ptr + (pid_b * D + d64) * 2 + 1, mask=dmask, other=0.0)
        for i in range(0, NSEG):
            if REVERSE:
                s = NSEG - 1 - i
            else:
                s = i
            row = pid_b * NSEG + s
            so = (row * D + d64) * 2
            tl.store(start_ptr + so, q, mask=dmask)
            tl.store(start_ptr + so + 1, p, mask=dmask)
            mo = (row * D + d64) * 6
            s11 = tl.load(summ_ptr + mo, mask=dmask, other=1.0)
            s12 = tl.load(summ_ptr + mo + 1, mask=dmask, other=0.0)
            s21 = tl.load(summ_ptr + mo + 2, mask=dmask, other=0.0)
            s22 = tl.load(summ_ptr + mo + 3, mask=dmask, other=1.0)
            w1 = tl.load(summ_ptr + mo + 4, mask=dmask, other=0.0)
            w2 = tl.load(summ_ptr + mo + 5, mask=dmask, other=0.0)
            q, p = s11 * q + s12 * p + w1, s21 * q + s22 * p + w2

    @triton.jit
    def _adjoint_chunk(
        gqp_ptr, dt_ptr, gm_ptr, gend1, gend2, k2, m2, dtv, gmv, pid_b, t0, d64, dmask, L, D,
        dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
        CHUNK: tl.constexpr, CT: tl.constexpr, DT_PC: tl.constexpr, GM_PC: tl.constexpr,
    ):  # fmt: skip
        """The chunk's adjoint maps λ_t = A_{t+1}ᵀ λ_{t+1} + g_t composed from the right.

        Works on a row-reversed tile (row r holds t = t0 + CHUNK - 1 - r) so that a forward
        ``associative_scan`` runs backwards in time; row r maps the carry λ_{t0+CHUNK} to λ_t.
        ``g_t`` is ∂L/∂(q_t, p_t), plus ∂L/∂final at t = L - 1.
        """
        tr = t0 + (CHUNK - 1 - tl.arange(0, CHUNK))
        rmsk = (tr < L)[:, None] & dmask[None, :]
        offr = (pid_b * L + tr[:, None]) * D + d64[None, :]
        gq = tl.load(gqp_ptr + offr * 2, mask=rmsk, other=0.0).to(CT)
        gp = tl.load(gqp_ptr + offr * 2 + 1, mask=rmsk, other=0.0).to(CT)
        is_last = (tr == L - 1)[:, None]
        gq = gq + tl.where(is_last, gend1[None, :], 0.0)
        gp = gp + tl.where(is_last, gend2[None, :], 0.0)
        nmsk = (tr + 1 < L)[:, None] & dmask[None, :]
        dtn = _load_param(dt_ptr, pid_b, tr + 1, d64, nmsk, dt_sb, dt_st, dt_sd, dtv, CT, DT_PC)
        gmn = _load_param(gm_ptr, pid_b, tr + 1, d64, nmsk, gm_sb, gm_st, gm_sd, gmv, CT, GM_PC)
        n11, n12, n21, n22, _nb1, _nb2 = _transition(dtn, gmn, k2, m2)
        # transposed transitions: (A11, A21, A12, A22)
        return tl.associative_scan((n11, n21, n12, n22, gq, gp), 0, _compose)

    @triton.jit
    def _bwd_summary_kernel(
        gqp_ptr, gend_ptr, dt_ptr, gm_ptr, k_ptr, m_ptr, summ_ptr,  # summ: (B, NSEG, D, 6)
        L, D, SEG_LEN, NSEG,
        dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, DT_PC: tl.constexpr, GM_PC: tl.constexpr,
    ):  # fmt: skip
        """Backward pass 1: each segment's composed adjoint map (segment 1 + program_id(2))."""
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        pid_s = tl.program_id(2) + 1
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < D
        d64 = d.to(tl.int64)
        rows = tl.arange(0, CHUNK)
        kk = tl.load(k_ptr + d64, mask=dmask, other=1.0)
        mm = tl.load(m_ptr + d64, mask=dmask, other=1.0)
        CT: tl.constexpr = kk.dtype
        dtv = _load_channel(dt_ptr, d64, dmask, dt_sd, CT, DT_PC)
        gmv = _load_channel(gm_ptr, d64, dmask, gm_sd, CT, GM_PC)
        go = (pid_b * D + d64) * 2
        gend1 = tl.load(gend_ptr + go, mask=dmask, other=0.0).to(CT)
        gend2 = tl.load(gend_ptr + go + 1, mask=dmask, other=0.0).to(CT)
        one = tl.full((BLOCK_D,), 1.0, CT)
        zero = tl.zeros((BLOCK_D,), CT)
        s11, s12, s21, s22, w1, w2 = one, zero, zero, one, zero, zero
        c_lo = pid_s * (SEG_LEN // CHUNK)
        c_hi = tl.minimum(c_lo + SEG_LEN // CHUNK, tl.cdiv(L, CHUNK))
        for i in range(0, c_hi - c_lo):
            t0 = (c_hi - 1 - i) * CHUNK
            r11, r12, r21, r22, l1r, l2r = _adjoint_chunk(
                gqp_ptr, dt_ptr, gm_ptr, gend1, gend2, kk[None, :], mm[None, :], dtv, gmv,
                pid_b, t0, d64, dmask, L, D, dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
                CHUNK, CT, DT_PC, GM_PC,
            )  # fmt: skip
            s11, s12, s21, s22, w1, w2 = _compose(
                s11, s12, s21, s22, w1, w2,
                _last_row(r11, rows, CHUNK), _last_row(r12, rows, CHUNK),
                _last_row(r21, rows, CHUNK), _last_row(r22, rows, CHUNK),
                _last_row(l1r, rows, CHUNK), _last_row(l2r, rows, CHUNK),
            )  # fmt: skip
        so = ((pid_b * NSEG + pid_s) * D + d64) * 6
        tl.store(summ_ptr + so, s11, mask=dmask)
        tl.store(summ_ptr + so + 1, s12, mask=dmask)
        tl.store(summ_ptr + so + 2, s21, mask=dmask)
        tl.store(summ_ptr + so + 3, s22, mask=dmask)
        tl.store(summ_ptr + so + 4, w1, mask=dmask)
        tl.store(summ_ptr + so + 5, w2, mask=dmask)

    @triton.jit
    def _bwd_kernel(
        f_ptr, dt_ptr, gm_ptr, k_ptr, m_ptr, bnd_ptr, gqp_ptr, gend_ptr, lam_ptr,  # inputs
        df_ptr, ddt_ptr, dgm_ptr, dk_ptr, dm_ptr, ds0_ptr,  # outputs
        L, D, NCHUNK, SEG_LEN, NSEG,
        dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, DT_PC: tl.constexpr, GM_PC: tl.constexpr,
    ):  # fmt: skip
        """Reverse-time adjoint scan; states recomputed per chunk from the saved boundaries.

        One program per (batch, channel block, segment); ``lam_ptr`` (B, NSEG, D, 2) holds the
        adjoint entering each segment from its right (zeros for the last one). ddt/dgm are
        (B, L, D) per step when selective, else (B, NSEG, D) partial sums (as dk, dm).
        """
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
        pid_s = tl.program_id(2)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < D
        d64 = d.to(tl.int64)
        rows = tl.arange(0, CHUNK)
        kk = tl.load(k_ptr + d64, mask=dmask, other=1.0)
        mm = tl.load(m_ptr + d64, mask=dmask, other=1.0)
        CT: tl.constexpr = kk.dtype
        k2 = kk[None, :]
        m2 = mm[None, :]
        dtv = _load_channel(dt_ptr, d64, dmask, dt_sd, CT, DT_PC)
        gmv = _load_channel(gm_ptr, d64, dmask, gm_sd, CT, GM_PC)
        go = (pid_b * D + d64) * 2
        gend1 = tl.load(gend_ptr + go, mask=dmask, other=0.0).to(CT)
        gend2 = tl.load(gend_ptr + go + 1, mask=dmask, other=0.0).to(CT)
        lo = ((pid_b * NSEG + pid_s) * D + d64) * 2
        lam1 = tl.load(lam_ptr + lo, mask=dmask, other=0.0)  # λ at the first step after the
        lam2 = tl.load(lam_ptr + lo + 1, mask=dmask, other=0.0)  # chunk processed next
        acc_k = tl.zeros((BLOCK_D,), CT)
        acc_m = tl.zeros((BLOCK_D,), CT)
        acc_dt = tl.zeros((BLOCK_D,), CT)
        acc_gm = tl.zeros((BLOCK_D,), CT)
        c_lo = pid_s * (SEG_LEN // CHUNK)
        c_hi = tl.minimum(c_lo + SEG_LEN // CHUNK, NCHUNK)
        for i in range(0, c_hi - c_lo):
            c = c_hi - 1 - i
            t0 = c * CHUNK
            # 1. states s_{t-1} on the forward-ordered tile: scan the maps at t-1 from the
            #    saved chunk-start state (row 0 holds the identity, so it yields s_{t0-1}).
            t = t0 + rows
            valid = t < L
            msk = valid[:, None] & dmask[None, :]
            pmsk = ((rows >= 1) & (t - 1 < L))[:, None] & dmask[None, :]
            offp = (pid_b * L + t[:, None] - 1) * D + d64[None, :]
            fp_ = tl.load(f_ptr + offp, mask=pmsk, other=0.0).to(CT)
            dtp = _load_param(dt_ptr, pid_b, t - 1, d64, pmsk, dt_sb, dt_st, dt_sd, dtv, CT, DT_PC)
            gmp = _load_param(gm_ptr, pid_b, t - 1, d64, pmsk, gm_sb, gm_st, gm_sd, gmv, CT, GM_PC)
            a11, a12, a21, a22, b1, b2 = _transition(dtp, gmp, k2, m2)
            p11, p12, p21, p22, u1, u2 = tl.associative_scan(
                (a11, a12, a21, a22, b1 * fp_, b2 * fp_), 0, _compose
            )
            bo = ((pid_b * NCHUNK + c) * D + d64) * 2
            q0 = tl.load(bnd_ptr + bo, mask=dmask, other=0.0)[None, :]
            p0 = tl.load(bnd_ptr + bo + 1, mask=dmask, other=0.0)[None, :]
            sq = p11 * q0 + p12 * p0 + u1  # q_{t-1}
            sp = p21 * q0 + p22 * p0 + u2  # p_{t-1}
            # 2. adjoint on a row-reversed tile: λ_t = A_{t+1}ᵀ λ_{t+1} + g_t, carry λ_{t0+CHUNK}.
            r11, r12, r21, r22, l1r, l2r = _adjoint_chunk(
                gqp_ptr, dt_ptr, gm_ptr, gend1, gend2, k2, m2, dtv, gmv,
                pid_b, t0, d64, dmask, L, D, dt_sb, dt_st, dt_sd, gm_sb, gm_st, gm_sd,
                CHUNK, CT, DT_PC, GM_PC,
            )  # fmt: skip
            l1r = r11 * lam1[None, :] + r12 * lam2[None, :] + l1r
            l2r = r21 * lam1[None, :] + r22 * lam2[None, :] + l2r
            lam1 = _last_row(l1r, rows, CHUNK)  # λ_{t0}, the carry for chunk c - 1
            lam2 = _last_row(l2r, rows, CHUNK)
            l1 = tl.flip(l1r, 0)  # back to forward time order
            l2 = tl.flip(l2r, 0)
            # 3. gradients at step t from λ_t, s_{t-1}, f_t and the analytic ∂A_t, ∂b_t.
            off = (pid_b * L + t[:, None]) * D + d64[None, :]
            fv = tl.load(f_ptr + off, mask=msk, other=0.0).to(CT)
            dt = _load_param(dt_ptr, pid_b, t, d64, msk, dt_sb, dt_st, dt_sd, dtv, CT, DT_PC)
            gm = _load_param(gm_ptr, pid_b, t, d64, msk, gm_sb, gm_st, gm_sd, gmv, CT, GM_PC)
            e = tl.exp(-0.5 * gm * dt)
            a = 0.5 * dt * dt * k2 / m2
            h = 1.0 - 0.5 * a
            b1 = 0.5 * dt * dt / m2
            b2 = e * dt * h
            tl.store(df_ptr + off, (b1 * l1 + b2 * l2).to(df_ptr.dtype.element_ty), mask=msk)
            ga11 = l1 * sq
            ga12 = l1 * sp
            ga21 = l2 * sq
            ga22 = l2 * sp
            gb1 = l1 * fv
            gb2 = l2 * fv
            g_a = -ga11 + 0.5 * ga21 * e * dt * k2 - ga22 * e * e - 0.5 * gb2 * e * dt
            g_e = ga12 * dt / m2 - ga21 * dt * k2 * h + 2.0 * ga22 * e * (1.0 - a) + gb2 * dt * h
            g_dt = ga12 * e / m2 - ga21 * e * k2 * h + gb1 * dt / m2 + gb2 * e * h
            g_dt = g_dt + g_a * dt * k2 / m2 - 0.5 * g_e * gm * e
            g_gm = -0.5 * g_e * dt * e
            g_k = -ga21 * e * dt * h + 0.5 * g_a * dt * dt / m2
            g_m = -(ga12 * dt * e + 0.5 * gb1 * dt * dt) / (m2 * m2) - g_a * a / m2
            acc_k += tl.sum(tl.where(msk, g_k, 0.0), axis=0)
            acc_m += tl.sum(tl.where(msk, g_m, 0.0), axis=0)
            if DT_PC:
                acc_dt += tl.sum(tl.where(msk, g_dt, 0.0), axis=0)
            else:
                tl.store(ddt_ptr + off, g_dt.to(ddt_ptr.dtype.element_ty), mask=msk)
            if GM_PC:
                acc_gm += tl.sum(tl.where(msk, g_gm, 0.0), axis=0)
            else:
                tl.store(dgm_ptr + off, g_gm.to(dgm_ptr.dtype.element_ty), mask=msk)
        # ∂L/∂s_{-1} = A_0ᵀ λ_0 (segment 0 only).
        if DT_PC:
            dt0 = dtv
        else:
            dt0 = tl.load(dt_ptr + pid_b * dt_sb + d64 * dt_sd, mask=dmask, other=0.0).to(CT)
        if GM_PC:
            gm0 = gmv
        else:
            gm0 = tl.load(gm_ptr + pid_b * gm_sb + d64 * gm_sd, mask=dmask, other=0.0).to(CT)
        a11, a12, a21, a22, _b1, _b2 = _transition(dt0, gm0, kk, mm)
        first = dmask & ((d * 0 + pid_s) == 0)
        tl.store(ds0_ptr + go, a11 * lam1 + a21 * lam2, mask=first)
        tl.store(ds0_ptr + go + 1, a12 * lam1 + a22 * lam2, mask=first)
        po = (pid_b * NSEG + pid_s) * D + d64
        tl.store(dk_ptr + po, acc_k, mask=dmask)
        tl.store(dm_ptr + po, acc_m, mask=dmask)
        if DT_PC:
            tl.store(ddt_ptr + po, acc_dt, mask=dmask)
        if GM_PC:
            tl.store(dgm_ptr + po, acc_gm, mask=dmask)


def _interpreting() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    if not HAS_TRITON:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_fwd_kernel, InterpretedFunction)


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (1 for the CPU interpreter)."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else 0)
    return 1


def _param_view(x: torch.Tensor, shape: tuple[int, int, int], ct: torch.dtype):
    """Broadcast Δ or γ to (B, L, D) without copying; return (tensor, strides, per_channel)."""
    x = x.to(ct) if x.dtype not in (torch.float16, torch.bfloat16, ct) else x
    v = torch.broadcast_to(x, shape)
    s_b, s_t, s_d = v.stride()
    per_channel = s_b == 0 and s_t == 0
    return v, (s_b, s_t, s_d), per_channel


class _Plan:
    """Launch geometry shared by forward and backward.

    ``variant="auto"`` segments the forward only when one program per (batch, channel block)
    leaves the GPU under-filled (fewer programs than ``sms``), aiming at about 4 programs per SM.
    """

    def __init__(self, B, L, D, chunk, block_d, variant, segments, sms):
        self.B, self.L, self.D, self.chunk, self.block_d = B, L, D, chunk, block_d
        self.n_dblk = triton.cdiv(D, block_d)
        self.n_chunk = triton.cdiv(L, chunk)
        programs = B * self.n_dblk
        if variant == "auto":
            segmented = programs < sms and self.n_chunk >= 4
            n_seg = triton.cdiv(4 * sms, programs) if segmented else 1
        elif variant == "single":
            n_seg = 1
        elif variant == "segmented":
            n_seg = segments if segments is not None else max(2, self.n_chunk // 2)
        else:
            raise ValueError(f"variant must be auto, single or segmented, got {variant!r}")
        n_seg = max(1, min(n_seg, self.n_chunk))
        self.seg_len = max(1, triton.cdiv(self.n_chunk, n_seg)) * chunk
        self.n_seg = max(1, triton.cdiv(L, self.seg_len))


def _forward(f, dt_v, dt_s, dt_pc, gm_v, gm_s, gm_pc, k, m, s0, plan, out_dtype, save_bnd):
    B, L, D, C, BD = plan.B, plan.L, plan.D, plan.chunk, plan.block_d
    ct = k.dtype
    dev = f.device
    qp = torch.empty(B, L, D, 2, device=dev, dtype=out_dtype)
    bnd = torch.empty(B, plan.n_chunk if save_bnd else 1, D, 2, device=dev, dtype=ct)
    end = torch.empty(B, plan.n_seg, D, 2, device=dev, dtype=ct)
    common = dict(CHUNK=C, BLOCK_D=BD, DT_PC=dt_pc, GM_PC=gm_pc)
    if plan.n_seg == 1:
        start = s0
    else:
        summ = torch.zeros(B, plan.n_seg, D, 6, device=dev, dtype=ct)  # last one unused
        _seg_summary_kernel[(B, plan.n_dblk, plan.n_seg - 1)](
            f, dt_v, gm_v, k, m, summ, L, D, plan.seg_len, plan.n_seg, *dt_s, *gm_s,
            num_warps=_NUM_WARPS, enable_fp_fusion=True, **common,
        )  # fmt: skip
        start = torch.empty(B, plan.n_seg, D, 2, device=dev, dtype=ct)
        _seg_carry_kernel[(B, plan.n_dblk)](
            s0, summ, start, D, plan.n_seg, BLOCK_D=BD, REVERSE=False, enable_fp_fusion=True
        )
    _fwd_kernel[(B, plan.n_dblk, plan.n_seg)](
        f, dt_v, gm_v, k, m, start, qp, bnd, end, L, D, plan.seg_len, plan.n_seg, plan.n_chunk,
        *dt_s, *gm_s, STORE_BND=save_bnd, num_warps=_NUM_WARPS, enable_fp_fusion=True, **common,
    )  # fmt: skip
    return qp, end[:, -1], bnd


class _ScanTritonFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, dt, gamma, k, m, state, chunk, block_d, variant, segments):
        B, L, D = f.shape
        out_dtype = f.dtype  # the promoted dtype, as scan_ref; fp16/bf16 computed in fp32
        for x in (dt, gamma, k, m, state):
            if x is not None and x.is_floating_point():
                out_dtype = torch.promote_types(out_dtype, x.dtype)
        ct = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
        shape = (B, L, D)
        dt_v, dt_s, dt_pc = _param_view(dt, shape, ct)
        gm_v, gm_s, gm_pc = _param_view(gamma, shape, ct)
        kc = torch.broadcast_to(k.reshape(-1), (D,)).to(ct).contiguous()
        mc = torch.broadcast_to(m.reshape(-1), (D,)).to(ct).contiguous()
        fc = f.contiguous()
        if state is None:
            s0 = torch.zeros(B, D, 2, device=f.device, dtype=ct)
        else:
            s0 = state.to(ct).contiguous()
        plan = _Plan(B, L, D, chunk, block_d, variant, segments, _sm_count(f.device))
        save = any(ctx.needs_input_grad[:6])
        if L == 0:
            qp = torch.empty(B, 0, D, 2, device=f.device, dtype=out_dtype)
            final, bnd = s0.clone(), s0
        else:
            qp, final, bnd = _forward(
                fc, dt_v, dt_s, dt_pc, gm_v, gm_s, gm_pc, kc, mc, s0, plan, out_dtype, save
            )
            final = qp[:, -1].clone()  # exactly qp[:, -1], also after rounding to fp16/bf16
        ctx.save_for_backward(fc, dt_v, gm_v, kc, mc, bnd)
        ctx.meta = (plan, dt_s, dt_pc, gm_s, gm_pc, dt.shape, gamma.shape, state is None)
        ctx.dtypes = (f.dtype, dt.dtype, gamma.dtype, k.dtype, m.dtype,
                      None if state is None else state.dtype)  # fmt: skip
        return qp, final.to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_qp, g_final):
        fc, dt_v, gm_v, kc, mc, bnd = ctx.saved_tensors
        plan, dt_s, dt_pc, gm_s, gm_pc, dt_shape, gm_shape, no_state = ctx.meta
        B, L, D = plan.B, plan.L, plan.D
        ct = kc.dtype
        dev = fc.device
        g_qp = g_qp.contiguous()
        g_final = g_final.to(ct).contiguous()
        S = plan.n_seg
        df = torch.empty(B, L, D, device=dev, dtype=ct)
        ddt = torch.empty((B, S, D) if dt_pc else (B, L, D), device=dev, dtype=ct)
        dgm = torch.empty((B, S, D) if gm_pc else (B, L, D), device=dev, dtype=ct)
        dk = torch.empty(B, S, D, device=dev, dtype=ct)
        dm = torch.empty(B, S, D, device=dev, dtype=ct)
        ds0 = torch.empty(B, D, 2, device=dev, dtype=ct)
        if L == 0:
            ddt.zero_(), dgm.zero_(), dk.zero_(), dm.zero_()
            ds0.copy_(g_final)
        else:
            grid = (B, plan.n_dblk)
            common = dict(CHUNK=plan.chunk, BLOCK_D=plan.block_d, DT_PC=dt_pc, GM_PC=gm_pc)
            lam = torch.zeros(B, S, D, 2, device=dev, dtype=ct)
            if S > 1:
                summ = torch.zeros(B, S, D, 6, device=dev, dtype=ct)  # segment 0's unused
                _bwd_summary_kernel[(*grid, S - 1)](
                    g_qp, g_final, dt_v, gm_v, kc, mc, summ, L, D, plan.seg_len, S,
                    *dt_s, *gm_s, num_warps=_NUM_WARPS, enable_fp_fusion=True, **common,
                )  # fmt: skip
                _seg_carry_kernel[grid](
                    torch.zeros_like(ds0),
                    summ,
                    lam,
                    D,
                    S,
                    BLOCK_D=plan.block_d,
                    REVERSE=True,
                    enable_fp_fusion=True,
                )
            _bwd_kernel[(*grid, S)](
                fc, dt_v, gm_v, kc, mc, bnd, g_qp, g_final, lam,
                df, ddt, dgm, dk, dm, ds0,
                L, D, plan.n_chunk, plan.seg_len, S, *dt_s, *gm_s,
                num_warps=_NUM_WARPS_BWD, enable_fp_fusion=True, **common,
            )  # fmt: skip
        f_dt, dt_dt, gm_dt, k_dt, m_dt, s_dt = ctx.dtypes
        if dt_pc:
            ddt = ddt.sum((0, 1)).view(1, 1, D)
        if gm_pc:
            dgm = dgm.sum((0, 1)).view(1, 1, D)
        grads = (
            df.to(f_dt),
            ddt.sum_to_size(dt_shape).to(dt_dt),
            dgm.sum_to_size(gm_shape).to(gm_dt),
            dk.sum((0, 1)).to(k_dt),
            dm.sum((0, 1)).to(m_dt),
            None if no_state else ds0.to(s_dt),
        )
        return (*grads, None, None, None, None)


def _check(f, dt, gamma, k, m, state, chunk_size):
    """Validate the arguments (one clear ValueError); return dt, gamma, k, m as tensors."""
    if not HAS_TRITON:
        raise RuntimeError("scan_triton needs triton, which is not installed")
    if not isinstance(f, torch.Tensor) or f.dim() != 3:
        raise ValueError(f"scan_triton: f must be a (B, L, D) tensor, got {getattr(f, 'shape', f)}")
    B, L, D = f.shape
    if not f.is_cuda and not _interpreting():
        raise ValueError("scan_triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
    if chunk_size < 2 or chunk_size > 1024 or chunk_size & (chunk_size - 1):
        raise ValueError(
            f"scan_triton: chunk_size must be a power of two in [2, 1024], got {chunk_size}"
        )
    out = []
    for name, x in (("dt", dt), ("gamma", gamma), ("k", k), ("m", m)):
        x = torch.as_tensor(x, device=f.device)
        if name in ("k", "m"):
            if x.dim() > 1 or x.numel() not in (1, D):
                raise ValueError(f"scan_triton: {name} must be (D,) = ({D},), got {tuple(x.shape)}")
        else:
            try:
                torch.broadcast_shapes(x.shape, (B, L, D))
            except RuntimeError:
                message = (
                    f"scan_triton: {name} of shape {tuple(x.shape)} does not broadcast to {B, L, D}"
                )
                raise ValueError(message) from None
            if x.dim() > 3:
                raise ValueError(
                    f"scan_triton: {name} must broadcast to (B, L, D), got {tuple(x.shape)}"
                )
        out.append(x)
    if state is not None and tuple(state.shape) != (B, D, 2):
        message = f"scan_triton: state must be (B, D, 2) = {(B, D, 2)}, got {tuple(state.shape)}"
        raise ValueError(message)
    return out


def _scan_triton(
    f, dt, gamma, k, m, state=None, *, chunk_size=64, block_d=None, variant="auto", segments=None
):
    """``scan_triton`` with the launch choices exposed (tests force each forward variant)."""
    dt, gamma, k, m = _check(f, dt, gamma, k, m, state, chunk_size)
    if block_d is None:
        block_d = min(_DEFAULT_BLOCK_D, triton.next_power_of_2(max(f.shape[2], 1)))
    return _ScanTritonFn.apply(f, dt, gamma, k, m, state, chunk_size, block_d, variant, segments)


def scan_triton(f, dt, gamma, k, m, state=None, *, chunk_size=64):
    """Run the HML-D scan with fused Triton kernels (forward and backward).

    Same contract as ``hamfin.core.scan.scan_ref`` (the reference this is tested against).

    Parameters
    ----------
    f : Tensor
        Forcing, (B, L, D); fp32, fp64, fp16 or bf16.
    dt, gamma : Tensor
        Step Δ and damping γ ≥ 0, broadcastable to (B, L, D): (D,) per channel or (B, L, D).
    k, m : Tensor
        Stiffness and mass, (D,), > 0. The caller guarantees Δ²k/m < 4.
    state : Tensor, optional
        Initial (q, p), (B, D, 2); zeros when None.
    chunk_size : int
        Steps per chunk: the tile height, and the spacing of the states the forward saves for
        the backward. Rounded up to a power of two in [2, 1024] (results do not depend on it
        beyond round-off).

    Returns
    -------
    qp : Tensor
        (B, L, D, 2), the state (q_t, p_t) after each step, in ``f.dtype`` (fp32 for fp32 f).
    final_state : Tensor
        (B, D, 2), equal to ``qp[:, -1]`` (``state`` when L == 0).

    Notes
    -----
    Needs CUDA tensors, or CPU tensors when Triton's interpreter is on (``TRITON_INTERPRET=1``
    set before triton is first imported). Few sequences (small B·D) take the segmented forward.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"scan_triton: chunk_size must be >= 1, got {chunk_size}")
    chunk = min(1024, max(2, 1 << (int(chunk_size) - 1).bit_length()))
    return _scan_triton(f, dt, gamma, k, m, state, chunk_size=chunk)


def _time_cuda(fn, *, warmup: int, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def _peer_figures(B, D, L, *, warmup, reps):
    """The PyPI ``accelerated-scan`` complex first-order scan at (B, D, L); None if absent."""
    try:
        from accelerated_scan.complex import scan as peer_scan
    except ImportError:
        return None, None
    g = torch.Generator(device="cuda").manual_seed(0)
    radius = 0.4 + 0.6 * torch.rand(B, D, L, device="cuda", generator=g)
    angle = 2 * math.pi * torch.rand(B, D, L, device="cuda", generator=g)
    forget = torch.polar(radius, angle).to(torch.complex64).contiguous()
    inputs = torch.randn(B, D, L, device="cuda", generator=g).contiguous()
    with torch.no_grad():
        fwd = _time_cuda(lambda: peer_scan(forget, inputs), warmup=warmup, reps=reps)
    forget.requires_grad_(True)
    inputs.requires_grad_(True)

    def fwdbwd():
        out = peer_scan(forget, inputs)
        torch.autograd.grad(out.real.sum() + out.imag.sum(), (forget, inputs))

    return fwd, _time_cuda(fwdbwd, warmup=warmup, reps=reps)


def gpu_figures(
    B: int, D: int, L: int, *, dtype=torch.float32, selective: bool = False, reps: int = 20
) -> dict:
    """Time the kernel, its memory floor and the peer on the current CUDA device.

    Parameters
    ----------
    B, D, L : int
        Batch, channels, length.
    dtype : torch.dtype
        Dtype of f and of the outputs.
    selective : bool
        Δ and γ per step (B, L, D) instead of per channel (D,).
    reps : int
        Timed repetitions; the median is reported (after a few warmup runs).

    Returns
    -------
    dict
        Seconds: ``kernel_fwd_s``, ``kernel_fwdbwd_s``, ``floor_fwd_s`` (a device-to-device copy
        moving exactly the bytes the forward must read plus write: f, q, p, and Δ, γ when
        selective), ``peer_fwd_s``, ``peer_fwdbwd_s`` (None when ``accelerated_scan`` is not
        installed); also ``floor_fwd_bytes`` and ``device``.
    """
    if not torch.cuda.is_available() or not HAS_TRITON:
        raise RuntimeError("gpu_figures needs a CUDA device and triton")
    dev = torch.device("cuda")
    warmup = 5
    g = torch.Generator(device=dev).manual_seed(0)
    k = 0.5 + torch.rand(D, device=dev, generator=g)
    m = 0.5 + torch.rand(D, device=dev, generator=g)
    pshape = (B, L, D) if selective else (D,)
    # Δ = 2 sqrt(m/k) sigmoid(·) keeps Δ²k/m < 4 (HMLD.md).
    dt = 2 * torch.sqrt(m / k) * torch.sigmoid(torch.randn(pshape, device=dev, generator=g))
    gamma = torch.rand(pshape, device=dev, generator=g)
    f = torch.randn(B, L, D, device=dev, generator=g)
    # every input in ``dtype``, so the outputs are in ``dtype`` too (dtype promotion)
    f, dt, gamma, k, m = (x.to(dtype) for x in (f, dt, gamma, k, m))
    with torch.no_grad():
        fwd = _time_cuda(lambda: scan_triton(f, dt, gamma, k, m), warmup=warmup, reps=reps)
    leaves = [x.detach().clone().requires_grad_(True) for x in (f, dt, gamma, k, m)]
    g_qp = torch.randn(B, L, D, 2, device=dev, generator=g).to(dtype)

    def fwdbwd():
        qp, _ = scan_triton(*leaves)
        torch.autograd.grad(qp, leaves, g_qp)

    fwdbwd_s = _time_cuda(fwdbwd, warmup=warmup, reps=reps)
    el = f.element_size()  # f, q and p all in ``dtype``
    per_step = 3 * el + (dt.element_size() + gamma.element_size() if selective else 0)
    nbytes = B * L * D * per_step
    # A copy reads and writes the same count, so copy half the total traffic.
    src = torch.empty(nbytes // 2, device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    floor = _time_cuda(lambda: dst.copy_(src), warmup=warmup, reps=reps)
    peer_fwd, peer_fwdbwd = _peer_figures(B, D, L, warmup=warmup, reps=reps)
    return {
        "kernel_fwd_s": fwd,
        "kernel_fwdbwd_s": fwdbwd_s,
        "floor_fwd_s": floor,
        "floor_fwd_bytes": nbytes,
        "peer_fwd_s": peer_fwd,
        "peer_fwdbwd_s": peer_fwdbwd,
        "device": torch.cuda.get_device_name(dev),
    }
