"""Mesh operations for the particle-mesh code: wavenumbers, cloud-in-cell paint and
readout, and binned power- and cross-power-spectrum estimators.

Conventions: a mesh is a real tensor ``[n, n, n]`` covering a periodic box of side
``box_size`` (Mpc/h); cell i spans [i, i+1) * box_size / n. Particle positions are in
Mpc/h. Fourier transforms are ``torch.fft.rfftn`` over the last three axes; the last
axis keeps only k_z >= 0.
"""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F


def wavenumbers(n: int, box_size: float, device=None, dtype=torch.float32):
    """Wavenumbers of an rfftn mesh, in h/Mpc.

    Returns (kx, ky, kz) broadcastable to ``[n, n, n // 2 + 1]``: kx ``[n, 1, 1]``,
    ky ``[1, n, 1]``, kz ``[1, 1, n // 2 + 1]``.
    """
    kf = 2.0 * math.pi / box_size
    k = torch.fft.fftfreq(n, d=1.0 / n, device=device).to(dtype) * kf
    kz = torch.fft.rfftfreq(n, d=1.0 / n, device=device).to(dtype) * kf
    return k.view(n, 1, 1), k.view(1, n, 1), kz.view(1, 1, -1)


def nyquist_mask(n: int, device=None) -> torch.Tensor:
    """Boolean ``[n, n, n // 2 + 1]`` mask, False on the k = 0 mode and on Nyquist planes."""
    i = torch.fft.fftfreq(n, d=1.0 / n, device=device).abs()
    iz = torch.fft.rfftfreq(n, d=1.0 / n, device=device)
    half = n // 2
    ok = (i.view(n, 1, 1) != half) & (i.view(1, n, 1) != half) & (iz.view(1, 1, -1) != half)
    ok[0, 0, 0] = False
    return ok


def _cic_weights(pos: torch.Tensor, n: int, box_size: float):
    """Flattened corner indices ``[8, N]`` and weights ``[8, N]`` for CIC on an n^3 mesh."""
    g = pos * (n / box_size)
    i0f = torch.floor(g)
    f = g - i0f  # differentiable in pos
    i0 = torch.remainder(i0f.long(), n)
    strides = torch.tensor([n * n, n, 1], device=pos.device)
    idx = torch.stack([i0 * strides, torch.remainder(i0 + 1, n) * strides])  # [2, N, 3]
    w = torch.stack([1.0 - f, f])  # [2, N, 3]
    flat = idx[:, None, None, :, 0] + idx[None, :, None, :, 1] + idx[None, None, :, :, 2]
    ww = w[:, None, None, :, 0] * w[None, :, None, :, 1] * w[None, None, :, :, 2]
    return flat.reshape(8, -1), ww.reshape(8, -1)


def cic_paint(pos: torch.Tensor, n: int, box_size: float, weight: torch.Tensor | None = None):
    """Paint particles onto a mesh with cloud-in-cell weights.

    pos: ``[N, 3]`` Mpc/h (any real values; wrapped periodically). weight: optional
    ``[N]``. Returns the summed weights ``[n, n, n]`` (dtype of pos). Differentiable in
    pos and weight.
    """
    flat, w = _cic_weights(pos, n, box_size)
    if weight is not None:
        w = w * weight[None]
    mesh = torch.zeros(n**3, dtype=pos.dtype, device=pos.device)
    mesh = mesh.index_add(0, flat.reshape(-1), w.reshape(-1))
    return mesh.view(n, n, n)


def cic_readout(mesh: torch.Tensor, pos: torch.Tensor, box_size: float) -> torch.Tensor:
    """Interpolate mesh values at particle positions with cloud-in-cell weights.

    mesh: ``[C, n, n, n]`` or ``[n, n, n]``; pos: ``[N, 3]`` Mpc/h. Returns ``[N, C]`` or
    ``[N]``. Differentiable in mesh and pos.
    """
    squeeze = mesh.dim() == 3
    if squeeze:
        mesh = mesh[None]
    padded = F.pad(mesh[None], (0, 1, 0, 1, 0, 1), mode="circular")[0]
    out = cic_readout_padded(padded, torch.remainder(pos, box_size), box_size)
    return out[:, 0] if squeeze else out


def cic_readout_padded(padded: torch.Tensor, pos: torch.Tensor, box_size: float) -> torch.Tensor:
    """CIC readout from a mesh that repeats its first plane at the end of every axis.

    padded: ``[C, n+1, n+1, n+1]``; pos: ``[N, 3]`` Mpc/h in [0, box_size]. Returns
    ``[N, C]``. CIC readout is trilinear interpolation, so this is ``grid_sample`` (fast,
    differentiable, CPU and CUDA). Under forward-mode AD, which ``grid_sample`` lacks, the
    eight corners are gathered instead (same values).
    """
    if _has_tangent(padded) or _has_tangent(pos):
        return _readout_gather(padded, pos, box_size)
    g = pos * (2.0 / box_size) - 1.0  # [0, L] -> [-1, 1] <-> padded indices [0, n]
    grid = g.flip(-1).to(padded.dtype).view(1, 1, 1, -1, 3)  # grid_sample wants (z, y, x)
    out = F.grid_sample(
        padded[None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.view(padded.shape[0], -1).T


def _has_tangent(t: torch.Tensor) -> bool:
    """True when t carries a forward-mode (``torch.autograd.forward_ad``) tangent."""
    return fwAD.unpack_dual(t).tangent is not None


def _readout_gather(padded: torch.Tensor, pos: torch.Tensor, box_size: float) -> torch.Tensor:
    """:func:`cic_readout_padded` by gathering the 8 corners; used under forward-mode AD,
    which ``grid_sample`` does not support. Same arguments and values (to rounding)."""
    c, n1 = padded.shape[0], padded.shape[1]
    n = n1 - 1
    g = pos * (n / box_size)
    i0f = torch.floor(g).clamp(0, n - 1)
    f = g - i0f
    i0 = i0f.long()
    flat = padded.reshape(c, -1)
    out = torch.zeros(c, pos.shape[0], dtype=padded.dtype, device=padded.device)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                idx = ((i0[:, 0] + dx) * n1 + i0[:, 1] + dy) * n1 + i0[:, 2] + dz
                out = out + flat[:, idx] * (wx * wy * wz).to(padded.dtype)
    return out.T


def fd_gradient_padded(phi: torch.Tensor, cell: float) -> torch.Tensor:
    """Central-difference gradient of a periodic mesh, padded for :func:`cic_readout_padded`.

    phi: ``[n, n, n]``; cell: mesh spacing. Returns ``[3, n+1, n+1, n+1]`` with
    out[d][i] = (phi[i + e_d] - phi[i - e_d]) / (2 cell), indices taken modulo n.
    """
    n = phi.shape[-1]
    p = F.pad(phi[None, None], (1, 2, 1, 2, 1, 2), mode="circular")[0, 0]  # [n+3]^3
    c, lo, hi = slice(1, n + 2), slice(0, n + 1), slice(2, n + 3)
    grad = torch.stack(
        [p[hi, c, c] - p[lo, c, c], p[c, hi, c] - p[c, lo, c], p[c, c, hi] - p[c, c, lo]]
    )
    return grad / (2.0 * cell)


def cic_window(n: int, box_size: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fourier window of one CIC assignment on an rfftn mesh, ``[n, n, n // 2 + 1]``."""
    cell = box_size / n
    w = torch.ones((), device=device, dtype=dtype)
    for k in wavenumbers(n, box_size, device, dtype):
        w = w * torch.sinc(k * cell / (2.0 * math.pi)) ** 2  # torch.sinc(x) = sin(pi x)/(pi x)
    return w


def overdensity(pos: torch.Tensor, n: int, box_size: float) -> torch.Tensor:
    """CIC density contrast delta = rho / rho_mean - 1 on an n^3 mesh; pos ``[N, 3]`` Mpc/h."""
    rho = cic_paint(pos, n, box_size)
    return rho * (n**3 / pos.shape[0]) - 1.0


def power_spectrum(
    delta: torch.Tensor,
    box_size: float,
    n_bins: int = 16,
    k_max: float | None = None,
    deconvolve_cic: bool = False,
):
    """Spherically averaged power spectrum of a real field.

    delta: ``[n, n, n]`` density contrast on a periodic mesh of side box_size Mpc/h.
    Bins are linear in k from the fundamental k_f = 2 pi / L up to ``k_max`` (default: the
    Nyquist frequency). ``deconvolve_cic`` divides by the squared CIC window.
    Returns (k ``[B]`` mean |k| per bin in h/Mpc, P ``[B]`` in (Mpc/h)^3, n_modes ``[B]``,
    the number of independent complex modes; empty bins are dropped).
    """
    return cross_power_spectrum(delta, delta, box_size, n_bins, k_max, deconvolve_cic)


def cross_power_spectrum(
    delta_a: torch.Tensor,
    delta_b: torch.Tensor,
    box_size: float,
    n_bins: int = 16,
    k_max: float | None = None,
    deconvolve_cic: bool = False,
):
    """Spherically averaged cross-power spectrum Re<delta_a(k) delta_b*(k)> of two real fields.

    delta_a, delta_b: ``[n, n, n]`` on the same periodic mesh of side box_size Mpc/h. Bins,
    ``deconvolve_cic`` and the returned (k, P_ab, n_modes) as in :func:`power_spectrum`,
    which is the case delta_a = delta_b. The cross-correlation coefficient is
    r(k) = P_ab / sqrt(P_aa P_bb).
    """
    if delta_a.shape != delta_b.shape:
        raise ValueError(
            f"fields differ in shape: {tuple(delta_a.shape)} vs {tuple(delta_b.shape)}"
        )
    n = delta_a.shape[-1]
    dka = torch.fft.rfftn(delta_a.to(torch.float64)) * (box_size / n) ** 3
    if delta_b is delta_a:
        p = dka.abs() ** 2 / box_size**3
    else:
        dkb = torch.fft.rfftn(delta_b.to(torch.float64)) * (box_size / n) ** 3
        p = (dka * dkb.conj()).real / box_size**3
    device = delta_a.device
    if deconvolve_cic:
        p = p / cic_window(n, box_size, device, torch.float64) ** 2
    kx, ky, kz = wavenumbers(n, box_size, device, torch.float64)
    kk = torch.sqrt(kx**2 + ky**2 + kz**2)
    # modes with 0 < kz < n/2 stand for themselves and their conjugate partner
    iz = torch.fft.rfftfreq(n, d=1.0 / n, device=device)
    mult = torch.where((iz > 0) & (iz < n // 2), 2.0, 1.0).to(torch.float64).expand_as(kk)
    kf = 2.0 * math.pi / box_size
    k_max = math.pi * n / box_size if k_max is None else k_max
    edges = torch.linspace(0.5 * kf, k_max, n_bins + 1, dtype=torch.float64, device=device)
    idx = torch.bucketize(kk.reshape(-1), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    idx, m = idx[ok], mult.reshape(-1)[ok]
    counts = torch.zeros(n_bins, dtype=torch.float64, device=device).index_add(0, idx, m)
    psum = torch.zeros_like(counts).index_add(0, idx, m * p.reshape(-1)[ok])
    ksum = torch.zeros_like(counts).index_add(0, idx, m * kk.reshape(-1)[ok])
    keep = counts > 0
    # conjugate pairs are not independent: n_modes counts each pair once
    return ksum[keep] / counts[keep], psum[keep] / counts[keep], counts[keep] / 2.0
