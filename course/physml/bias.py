"""A neural physical engine for the halo mass distribution (Charnock et al. 2020,
arXiv:1909.06379) and a classical power-law bias model, both as Poisson likelihoods of a
halo catalog given a density field on a grid.

The data: fiducial physml boxes, each giving the density contrast on an ``n_grid**3`` grid
(2LPT at a = 1 and the particle-mesh field) and its FoF halos above the lecture mass cut,
binned onto the same grid (:func:`load_boxes`, cached on disk).

The neural physical engine (17 parameters, in the order of the source sketch):

1. ``x = log(1 + delta)`` (floored, see :data:`LOG_DENSITY_FLOOR`);
2. one rotation-invariant (l = 0) 3x3x3 kernel filled from 4 weights (centre, faces,
   edges, corners) by an explicit index map (:func:`kernel_index_map`), a periodic
   convolution, a bias and a softplus: ``h = softplus(k * x + b)``;
3. a mixture density network with two Gaussians in ``u = ln(M / (Msun/h))``: amplitudes
   ``alpha_j = softplus(a_j h + a'_j + initial_amplitude)``, ordered means
   ``mu_1 = m_1 h + m'_1 + ln M_th``, ``mu_2 = mu_1 + relu(m_2 h + m'_2)`` and widths
   ``sigma_j = softplus(s_j h + s'_j + initial_width)``;
4. the mass function per unit mass and volume ``n(M) = sum_j alpha_j / e^mu_j
   N(ln M; mu_j, sigma_j)``, whose integral above the threshold has the closed form
   ``int_{M_th} n dM = sum_j alpha_j / 2 exp(sigma_j^2 / 2)
   erfc((ln M_th - mu_j - sigma_j^2) / (sqrt(2) sigma_j))`` (:func:`expected_count`);
5. the Poisson (point-process) log-likelihood of the halos in (voxel, ln M):
   ``sum_halos log lambda(ln M_i) - sum_voxels N_expected``, with the intensity per voxel and
   per unit ln M ``lambda(u) = V M n(M)`` (V the voxel volume);
6. a Gaussian prior of width 10 on all parameters, which are offsets from the constants of
   :class:`EngineConstants` (the sketch's reparametrisation).

The power-law model: ``lambda_v(u) = (1 + delta_v)^beta * f(u)`` with ``f`` the same
two-Gaussian form with environment-independent parameters (7 parameters).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import _check_count, _check_finite_values, _check_real, _check_shape
from .cosmology import Cosmology
from .settings import cache_root
from .simulation import SimulationConfig, linear_modes, lpt_displacements, overdensity, simulate
from .simulation.ics import second_order_growth

# --------------------------------------------------------------------------- data

#: seeds of the bias boxes are SEED_OFFSET + i (the bundled sets use 0-999, 100000+, 200000)
SEED_OFFSET = 400_000
#: fiducial cosmology of the boxes (Omega_m, sigma_8)
FIDUCIAL = (0.3, 0.8)
#: number of boxes (full mode, fast mode) and how many of them are fitted (the rest held out)
N_BOXES = {"full": 16, "fast": 3}
N_FIT = {"full": 10, "fast": 2}
BOX_FORMAT_VERSION = 1  # bump when the cached box layout changes


@dataclass(frozen=True)
class Box:
    """One simulated box on a grid.

    delta_lpt, delta_pm: ``[n, n, n]`` float32 density contrast (CIC) of the 2LPT particles
    at a = 1 and of the particle-mesh particles at a = 1. halo_voxel: ``[H, 3]`` int64 grid
    coordinates (i, j, l) of each halo's voxel. halo_mass: ``[H]`` float64, Msun/h.
    box_size: Mpc/h. seed: the simulation seed.
    """

    delta_lpt: np.ndarray
    delta_pm: np.ndarray
    halo_voxel: np.ndarray
    halo_mass: np.ndarray
    box_size: float
    seed: int

    def __post_init__(self):
        where = f"Box(seed={self.seed})"
        n = self.delta_lpt.shape[0] if np.ndim(self.delta_lpt) == 3 else 0
        for name in ("delta_lpt", "delta_pm"):
            arr = getattr(self, name)
            _check_shape(arr, name, where, (n, n, n), "[n, n, n]")
            _check_finite_values(arr, name, where)
        (h, _) = _check_halos(self.halo_voxel, n, where)
        _check_shape(self.halo_mass, "halo_mass", where, (h,), f"[{h}] (one per halo)")
        _check_finite_values(self.halo_mass, "halo_mass", where)
        if not (np.asarray(self.halo_mass) > 0).all():
            raise ValueError(f"{where}: halo_mass must be > 0 (Msun/h)")
        _check_real(self.box_size, "box_size", where, low=0)

    @property
    def n_grid(self) -> int:
        return self.delta_lpt.shape[0]

    def counts(self) -> np.ndarray:
        """Number of halos in each voxel, ``[n, n, n]`` int64."""
        n = self.n_grid
        flat = np.ravel_multi_index(self.halo_voxel.T, (n, n, n))
        return np.bincount(flat, minlength=n**3).reshape(n, n, n)


def simulate_box(
    seed: int,
    n_grid: int = 32,
    config: SimulationConfig | None = None,
    cosmology: tuple[float, float] = FIDUCIAL,
) -> Box:
    """Simulate one box (PM N-body + FoF) and grid it; about 4 s at the lecture settings.

    The 2LPT field uses the same initial modes as the N-body run, displaced to a = 1.
    """
    config = config or SimulationConfig()
    _check_count(seed, "seed", "simulate_box", minimum=0)
    _check_count(n_grid, "n_grid", "simulate_box", minimum=4)
    _check_cosmology(cosmology, "simulate_box")
    om, s8 = cosmology
    res = simulate(om, s8, seed, config, keep_particles=True)
    box, n = config.box_size, config.n_particles
    cosmo = Cosmology(om, s8)
    with torch.no_grad():
        psi1, psi2 = lpt_displacements(linear_modes(cosmo, seed, n, box), box)
        i = torch.arange(n, dtype=torch.float32) * (box / n)
        q = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).view(-1, 3)
        one = torch.tensor(1.0, dtype=torch.float64)
        d2, _ = second_order_growth(cosmo, one)
        x_lpt = q + float(cosmo.growth_factor(one)) * psi1 + float(d2) * psi2
        delta_lpt = overdensity(torch.remainder(x_lpt, box), n_grid, box)
        delta_pm = overdensity(res.x, n_grid, box)
    cat = res.catalog
    voxel = np.minimum(np.floor(cat.pos.astype(np.float64) * n_grid), n_grid - 1).astype(np.int64)
    return Box(
        delta_lpt=delta_lpt.numpy().astype(np.float32),
        delta_pm=delta_pm.numpy().astype(np.float32),
        halo_voxel=voxel,
        halo_mass=cat.mass.astype(np.float64) * 1e10,
        box_size=float(box),
        seed=int(seed),
    )


def _check_cosmology(cosmology, where: str) -> None:
    if not hasattr(cosmology, "__len__") or len(cosmology) != 2:
        raise ValueError(f"{where}: cosmology must be (Omega_m, sigma_8), got {cosmology!r}")
    _check_real(cosmology[0], "cosmology (Omega_m)", where, low=0, high=1, high_open=False)
    _check_real(cosmology[1], "cosmology (sigma_8)", where, low=0)


def _check_halos(halo_voxel, n: int, where: str) -> tuple:
    """halo_voxel ``[H, 3]`` (H >= 0) integers in [0, n); returns its shape."""
    shape = tuple(getattr(halo_voxel, "shape", ()))
    if len(shape) != 2 or shape[1] != 3:
        raise ValueError(f"{where}: halo_voxel must have shape [H, 3], got {list(shape)}")
    if torch.is_tensor(halo_voxel):
        integer = not (halo_voxel.is_floating_point() or halo_voxel.is_complex())
    else:
        integer = np.asarray(halo_voxel).dtype.kind in "iu"
    if not integer:
        raise ValueError(f"{where}: halo_voxel must be integers, got {halo_voxel.dtype}")
    if shape[0] and (int(halo_voxel.min()) < 0 or int(halo_voxel.max()) >= n):
        raise ValueError(
            f"{where}: halo_voxel must lie in [0, n_grid = {n}), got "
            f"[{int(halo_voxel.min())}, {int(halo_voxel.max())}]"
        )
    return shape


def _box_dir(n_grid: int, config: SimulationConfig, cosmology, cache_dir) -> Path:
    recipe = {
        "format": BOX_FORMAT_VERSION,
        "n_grid": n_grid,
        "config": config.to_dict(),
        "cosmology": list(cosmology),
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir or cache_root()) / "bias" / key


def load_boxes(
    n_boxes: int,
    n_grid: int = 32,
    config: SimulationConfig | None = None,
    cosmology: tuple[float, float] = FIDUCIAL,
    cache_dir=None,
    progress: bool = True,
) -> list[Box]:
    """The first ``n_boxes`` bias boxes (seeds ``SEED_OFFSET + i``), simulated once and cached
    in ``cache_dir/bias/KEY/box_SEED.npz`` (default :func:`cache_root`; KEY hashes the grid,
    the simulation settings and the cosmology). A box not yet cached takes about 4 s.
    ``cache_dir=False`` simulates without caching.
    """
    _check_count(n_boxes, "n_boxes", "load_boxes")
    _check_count(n_grid, "n_grid", "load_boxes", minimum=4)
    _check_cosmology(cosmology, "load_boxes")
    config = config or SimulationConfig()
    folder = None if cache_dir is False else _box_dir(n_grid, config, cosmology, cache_dir)
    boxes = []
    seeds = [SEED_OFFSET + i for i in range(n_boxes)]
    todo = [s for s in seeds if folder is None or not (folder / f"box_{s}.npz").exists()]
    bar = None
    if todo and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"simulating {len(todo)} boxes (~4 s each)")
    for s in seeds:
        path = None if folder is None else folder / f"box_{s}.npz"
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as f:
                boxes.append(
                    Box(
                        **{k: f[k] for k in ("delta_lpt", "delta_pm", "halo_voxel", "halo_mass")},
                        box_size=float(f["box_size"]),
                        seed=int(f["seed"]),
                    )
                )
            continue
        b = simulate_box(s, n_grid, config, cosmology)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **{k: v for k, v in asdict(b).items()})
            os.replace(tmp, path)
        boxes.append(b)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return boxes


# --------------------------------------------------------------------------- the kernel

#: names of the 4 weights of the l = 0 kernel, by the number of non-zero offsets
SHELLS = ("centre", "faces", "edges", "corners")


def cube_symmetries() -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """The 48 symmetries of the cube as (axis permutation, mirror flags): 6 x 8."""
    return [
        (perm, flips)
        for perm in itertools.permutations(range(3))
        for flips in itertools.product((False, True), repeat=3)
    ]


def kernel_index_map(device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit index map of the l = 0 3x3x3 kernel (the sketch's ``kernel_indices`` and
    ``weight_index``).

    Returns (kernel_indices ``[27, 3]`` int64: the (i, j, l) position of every kernel element,
    weight_index ``[27]`` int64: which of the 4 weights goes there). Weight 0 is the centre,
    1 the 6 faces, 2 the 12 edges, 3 the 8 corners: an element's weight is set by its
    distance from the centre alone, so the kernel is invariant under the 48 symmetries of the
    cube.
    """
    idx = torch.tensor(list(itertools.product(range(3), repeat=3)), device=device)
    weight_index = (idx - 1).abs().sum(-1)  # number of non-zero offsets
    return idx, weight_index


def fill_kernel(weights: torch.Tensor) -> torch.Tensor:
    """Scatter l = 0 weights ``[..., 4]`` into kernels ``[..., 3, 3, 3]`` with the index map."""
    if weights.shape[-1] != 4:
        raise ValueError(f"fill_kernel: expected weights [..., 4], got {tuple(weights.shape)}")
    idx, widx = kernel_index_map(weights.device)
    flat = idx[:, 0] * 9 + idx[:, 1] * 3 + idx[:, 2]
    kernel = weights.new_zeros(*weights.shape[:-1], 27)
    kernel[..., flat] = weights[..., widx]
    return kernel.view(*weights.shape[:-1], 3, 3, 3)


def periodic_conv3d(field: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Periodic 3D cross-correlation ``out[v] = sum_o kernel[o + 1] field[v + o]``, o in
    {-1, 0, 1}^3.

    field: ``[B, n, n, n]``; kernel: ``[3, 3, 3]`` (returns ``[B, n, n, n]``) or
    ``[C, 3, 3, 3]`` (one output per kernel, returns ``[B, C, n, n, n]``).
    """
    n = field.shape[-1]
    _check_shape(field, "field", "periodic_conv3d", (None, n, n, n), "[B, n, n, n]")
    if tuple(kernel.shape[-3:]) != (3, 3, 3) or kernel.dim() not in (3, 4):
        raise ValueError(
            f"periodic_conv3d: kernel must be [3, 3, 3] or [C, 3, 3, 3], got {list(kernel.shape)}"
        )
    single = kernel.dim() == 3
    k = kernel[None] if single else kernel
    padded = F.pad(field[:, None], (1, 1, 1, 1, 1, 1), mode="circular")
    out = F.conv3d(padded, k[:, None].to(field.dtype))
    return out[:, 0] if single else out


# --------------------------------------------------------------------------- the model


def _all_names(model: str, n_gaussians: int) -> tuple[str, ...]:
    js = range(1, n_gaussians + 1)
    if model == "engine":
        mdn = [f"{r}{kind}_{j}" for r in "ams" for kind in ("", "'") for j in js]
        return (*(f"w_{s}" for s in SHELLS), "b_conv", *mdn)
    if model == "power_law":
        return ("beta", *(f"{r}'_{j}" for r in "ams" for j in js))
    raise ValueError(f"model: expected 'engine' or 'power_law', got {model!r}")


def param_names(model: str, const: EngineConstants | None = None) -> tuple[str, ...]:
    """Names of the free parameters, in the order of theta. "engine": the 4 kernel weights,
    the convolution's bias, then for the amplitudes (a), means (m) and widths (s) of the
    Gaussians their slopes in h (a_j, ...) and their biases (a'_j, ...), the order of the
    source sketch (17 parameters with 2 Gaussians), less those held fixed by
    ``const.engine_fixed``. "power_law": beta, then the biases."""
    const = const or EngineConstants()
    names = _all_names(model, const.n_gaussians)
    if model == "engine":
        fixed = dict(const.engine_fixed)
        unknown = set(fixed) - set(names)
        if unknown:
            raise ValueError(f"engine_fixed: unknown parameters {sorted(unknown)}")
        names = tuple(n for n in names if n not in fixed)
    return names


def _expand(model: str, theta: torch.Tensor, const: EngineConstants) -> torch.Tensor:
    """Free parameters ``[P, D]`` -> all parameters ``[P, D_all]`` (fixed ones inserted)."""
    if model != "engine" or not const.engine_fixed:
        return theta
    fixed = dict(const.engine_fixed)
    cols, i = [], 0
    for name in _all_names(model, const.n_gaussians):
        if name in fixed:
            cols.append(theta.new_full((theta.shape[0],), float(fixed[name])))
        else:
            cols.append(theta[:, i])
            i += 1
    return torch.stack(cols, -1)


#: 1 + delta is floored at this value before the logarithm (a few voxels are empty)
LOG_DENSITY_FLOOR = 1e-2


@dataclass(frozen=True)
class EngineConstants:
    """How the mixture is parametrised, and the constants of the reparametrisation (the
    sketch's initial amplitude, log mass threshold and initial width), so that the fitted
    parameters are of order one and a Gaussian prior of width ``prior_width`` on all of
    them is broad.

    mass_threshold: Msun/h (the lecture mass cut); n_gaussians: Gaussians in the mixture
    (2 in the paper). head: "sketch" (the paper's: amplitude alpha = softplus(. +
    initial_amplitude) in h^3 / Mpc^3, ordered means mu_1 = . + ln M_th, mu_j = mu_(j-1) +
    relu(.), widths sigma = softplus(. + initial_width)) or "threshold" (each Gaussian by
    what the halos above the threshold see: c0 = . + initial_amplitude, the ln of its
    intensity at M_th per unit volume and ln M; c1 = ., the log-slope d ln n / d ln M + 1 there;
    sigma = softplus(. + initial_width); the same family of functions). engine_fixed:
    ``((name, value), ...)`` engine parameters held fixed (not sampled).
    """

    mass_threshold: float = 2e11
    initial_amplitude: float = math.log(1e-2)
    initial_width: float = 0.5
    prior_width: float = 10.0
    n_gaussians: int = 2
    head: str = "sketch"
    engine_fixed: tuple = ()

    def __post_init__(self):
        where = "EngineConstants"
        _check_real(self.mass_threshold, "mass_threshold", where, low=0)
        _check_real(self.initial_amplitude, "initial_amplitude", where)
        _check_real(self.initial_width, "initial_width", where)
        _check_real(self.prior_width, "prior_width", where, low=0)
        _check_count(self.n_gaussians, "n_gaussians", where)
        for item in self.engine_fixed:
            if len(item) != 2 or not isinstance(item[0], str):
                raise ValueError(
                    f"{where}: engine_fixed must hold (name, value) pairs, got {item!r}"
                )
            _check_real(item[1], f"engine_fixed value of {item[0]!r}", where)
        if self.head not in ("sketch", "threshold"):
            raise ValueError(f"head: expected 'sketch' or 'threshold', got {self.head!r}")

    @property
    def log_mass_threshold(self) -> float:
        return math.log(self.mass_threshold)


@dataclass
class HaloField:
    """Fields and halos of a set of boxes, as the likelihoods take them.

    x: ``[B, n, n, n]`` float64, ``log(max(1 + delta, LOG_DENSITY_FLOOR))``;
    halo_box: ``[H]`` int64 box of each halo; halo_voxel: ``[H, 3]`` int64 grid coordinates;
    log_mass: ``[H]`` float64, ln(M / (Msun/h)); voxel_volume: (Mpc/h)^3.
    shells: ``[B, 4, n, n, n]``, x convolved with each of the 4 one-hot l = 0 kernels
    (computed when not given): the l = 0 convolution is linear in its 4 weights, so
    ``periodic_conv3d(x, fill_kernel(w)) = sum_k w_k shells[:, k]``, a cheap product.
    """

    x: torch.Tensor
    halo_box: torch.Tensor
    halo_voxel: torch.Tensor
    log_mass: torch.Tensor
    voxel_volume: float
    shells: torch.Tensor | None = None

    def __post_init__(self):
        where = "HaloField"
        if not torch.is_tensor(self.x) or not self.x.is_floating_point():
            raise ValueError(f"{where}: x must be a float tensor [B, n, n, n]")
        n_boxes, n = self.x.shape[0] if self.x.dim() else 0, self.x.shape[-1]
        _check_shape(self.x, "x", where, (None, n, n, n), "[B, n, n, n]")
        _check_finite_values(self.x, "x", where)
        (h, _) = _check_halos(self.halo_voxel, n, where)
        for name in ("halo_box", "log_mass"):
            _check_shape(getattr(self, name), name, where, (h,), f"[H] = [{h}] (halo_voxel)")
        if self.halo_box.is_floating_point() or (
            h and (int(self.halo_box.min()) < 0 or int(self.halo_box.max()) >= n_boxes)
        ):
            raise ValueError(f"{where}: halo_box must be integers in [0, B = {n_boxes})")
        _check_finite_values(self.log_mass, "log_mass", where)
        _check_real(self.voxel_volume, "voxel_volume", where, low=0)
        if self.shells is not None:
            _check_shape(self.shells, "shells", where, (n_boxes, 4, n, n, n), "[B, 4, n, n, n]")
        if self.shells is None:
            eye = torch.eye(4, dtype=self.x.dtype, device=self.x.device)
            self.shells = periodic_conv3d(self.x, fill_kernel(eye))

    @classmethod
    def from_boxes(cls, boxes, field: str = "pm", dtype=torch.float64, device=None):
        """Stack boxes; field ``"pm"`` (N-body) or ``"lpt"`` (2LPT at a = 1)."""
        if field not in ("pm", "lpt"):
            raise ValueError(f"HaloField.from_boxes: field: expected 'pm' or 'lpt', got {field!r}")
        boxes = list(boxes)
        if not boxes or not all(isinstance(b, Box) for b in boxes):
            raise ValueError("HaloField.from_boxes: boxes must be a non-empty list of Box")
        if len({(b.n_grid, b.box_size) for b in boxes}) != 1:
            raise ValueError("HaloField.from_boxes: boxes must share one n_grid and box_size")
        delta = np.stack([b.delta_pm if field == "pm" else b.delta_lpt for b in boxes])
        x = np.log(np.maximum(1.0 + delta.astype(np.float64), LOG_DENSITY_FLOOR))
        hb = np.concatenate([np.full(len(b.halo_mass), i) for i, b in enumerate(boxes)])
        t = dict(dtype=dtype, device=device)
        return cls(
            x=torch.as_tensor(x, **t),
            halo_box=torch.as_tensor(hb, dtype=torch.int64, device=device),
            halo_voxel=torch.as_tensor(
                np.concatenate([b.halo_voxel for b in boxes]), device=device
            ),
            log_mass=torch.as_tensor(np.log(np.concatenate([b.halo_mass for b in boxes])), **t),
            voxel_volume=(boxes[0].box_size / boxes[0].n_grid) ** 3,
        )

    @property
    def n_halos(self) -> int:
        return self.log_mass.shape[0]

    def transformed(self, perm, flips) -> HaloField:
        """The same boxes under a symmetry of the cube: axes permuted by ``perm`` (a
        permutation of (0, 1, 2)), then axis d mirrored (i -> n - 1 - i) where ``flips[d]``;
        field and halos together."""
        if sorted(perm) != [0, 1, 2] or len(flips) != 3:
            raise ValueError(
                f"HaloField.transformed: perm must be a permutation of (0, 1, 2) and flips 3 "
                f"flags, got {perm}, {flips}"
            )
        n = self.x.shape[-1]
        dims = [1 + d for d in range(3) if flips[d]]
        x = self.x.permute(0, *(1 + p for p in perm)).flip(dims or [])
        v = self.halo_voxel[:, list(perm)]
        v = torch.where(torch.tensor(flips, device=v.device), n - 1 - v, v)
        return HaloField(x, self.halo_box, v, self.log_mass, self.voxel_volume)

    def at_halos(self, grid: torch.Tensor) -> torch.Tensor:
        """Values of a ``[..., B, n, n, n]`` grid in each halo's voxel, ``[..., H]``."""
        v = self.halo_voxel
        return grid[..., self.halo_box, v[:, 0], v[:, 1], v[:, 2]]


def mixture_params(h, slopes: torch.Tensor, biases: torch.Tensor, const: EngineConstants):
    """The mixture density network's head: amplitudes, means and widths of the Gaussians
    (see :class:`EngineConstants` for the two parametrisations).

    h: ``[P, ...]`` network output (or a float 0 for an environment-independent mixture);
    slopes, biases: ``[P, 3, K]`` (amplitude, mean, width rows; one column per Gaussian)
    for P parameter sets. Returns log_alpha, mu, sigma, each ``[P, ..., K]``: ln of the
    amplitude alpha in h^3 / Mpc^3, and mean and width in ln(M / (Msun/h)).
    (Shapes are checked, not values: this is the inner loop of the likelihoods.)
    """
    _check_shape(slopes, "slopes", "mixture_params", (None, 3, None), "[P, 3, K]")
    _check_shape(biases, "biases", "mixture_params", tuple(slopes.shape), "[P, 3, K] (slopes)")
    n_sets, _, k = slopes.shape
    sketch = const.head == "sketch"
    mean_offsets = [const.log_mass_threshold] + [0.0] * (k - 1) if sketch else [0.0] * k
    offsets = [const.initial_amplitude] * k + mean_offsets + [const.initial_width] * k
    b = biases.reshape(n_sets, 3 * k) + biases.new_tensor(offsets)
    if torch.is_tensor(h):  # one fused multiply-add for all 3 k pre-activations
        shape = (n_sets,) + (1,) * (h.dim() - 1) + (3 * k,)
        pre = torch.addcmul(b.view(shape), h[..., None], slopes.reshape(n_sets, 3 * k).view(shape))
    else:
        pre = b + h * slopes.reshape(n_sets, 3 * k)
    sigma = F.softplus(pre[..., 2 * k :])
    if sketch:
        a = pre[..., :k]  # ln softplus(a), also where softplus(a) underflows
        log_alpha = torch.where(a < -30.0, a, torch.log(F.softplus(a.clamp(min=-30.0))))
        # ordered means: mu_1, then mu_j = mu_(j-1) + relu(...)
        mu = torch.cat([pre[..., k : k + 1], torch.relu(pre[..., k + 1 : 2 * k])], -1)
        return log_alpha, mu.cumsum(-1), sigma
    # threshold head: ln n(M_th) = c0, d ln(M n) / d ln M = c1 at M_th
    d = sigma**2 * (pre[..., k : 2 * k] - 1.0)  # mu - ln M_th
    log_alpha = pre[..., :k] + torch.log(sigma) + 0.5 * math.log(2 * math.pi) + d
    log_alpha = log_alpha + 0.5 * (d / sigma) ** 2
    mu = const.log_mass_threshold + d
    return log_alpha, mu, sigma


def log_erfc(z: torch.Tensor) -> torch.Tensor:
    """ln erfc(z), accurate for large positive z (through erfcx) and differentiable."""
    zp, zn = z.clamp(min=0.0), z.clamp(max=0.0)
    return torch.where(
        z > 0, torch.log(torch.special.erfcx(zp)) - zp * zp, torch.log(torch.erfc(zn))
    )


def expected_count(log_alpha, mu, sigma, u_lo: float, u_hi: float | None = None, volume=1.0):
    """Expected number of halos with u_lo <= ln M < u_hi (default: no upper limit) in a
    voxel of volume V, summed over the Gaussians: the closed form of
    ``V int alpha / e^mu N(ln M; mu, sigma) dM = V alpha / 2 exp(sigma^2 / 2)
    [erfc(z_lo) - erfc(z_hi)]``, z = (u - mu - sigma^2) / (sqrt(2) sigma), evaluated in
    logarithms (alpha exp(sigma^2 / 2) alone can overflow where erfc underflows).

    log_alpha (ln of h^3 / Mpc^3), mu, sigma: ``[..., K]``; u_lo, u_hi: ln(M / (Msun/h));
    volume: (Mpc/h)^3. Returns ``[...]``. (The numbers are checked; the shapes are left to
    broadcasting and the tensors' values unchecked: this is the inner loop of the likelihoods.)
    """
    u_lo = _check_real(u_lo, "u_lo", "expected_count")
    if u_hi is not None:
        _check_real(u_hi, "u_hi", "expected_count", low=u_lo)
    _check_real(volume, "volume", "expected_count", low=0)
    var = sigma * sigma
    inv = torch.rsqrt(2.0 * var)
    shift = mu + var
    log_front = log_alpha + 0.5 * var + math.log(0.5 * volume)
    n = torch.exp(log_front + log_erfc((u_lo - shift) * inv))
    if u_hi is not None:
        n = n - torch.exp(log_front + log_erfc((u_hi - shift) * inv))
    return n.sum(-1)


def log_intensity(u, log_alpha, mu, sigma, volume=1.0):
    """ln of the expected number of halos per voxel per unit ln M at u = ln(M / (Msun/h)):
    ``ln sum_j V alpha_j e^(u - mu_j) N(u; mu_j, sigma_j)``. u: ``[...]``; the others
    ``[..., 2]``; volume: (Mpc/h)^3. Returns ``[...]``."""
    _check_real(volume, "volume", "log_intensity", low=0)
    u = u[..., None]
    per = (
        log_alpha
        + (u - mu)
        - 0.5 * ((u - mu) / sigma) ** 2
        - torch.log(sigma)
        - 0.5 * math.log(2.0 * math.pi)
    )
    return torch.logsumexp(per, -1) + math.log(volume)


def _as_batch(theta: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if not torch.is_tensor(theta) or not theta.is_floating_point():
        raise ValueError(f"{name}: theta must be a float tensor [{n}] or [P, {n}], got {theta!r}")
    if theta.dim() == 0 or theta.shape[-1] != n or theta.dim() > 2:
        raise ValueError(
            f"{name}: theta: expected parameters [{n}] or [P, {n}], got {tuple(theta.shape)}"
        )
    return theta[None] if theta.dim() == 1 else theta


def engine_network(theta: torch.Tensor, data: HaloField, kernel: torch.Tensor | None = None):
    """h = softplus(periodic conv of data.x with the l = 0 kernel + bias).

    theta: ``[P, 17]``. Computed from the precomputed ``data.shells`` (the same as
    ``periodic_conv3d(data.x, fill_kernel(theta[:, :4]))``, cheaper). ``kernel``
    ``[P, 3, 3, 3]`` convolves data.x with that kernel instead (used to test the symmetry).
    Returns ``[P, B, n, n, n]``.
    """
    _check_shape(theta, "theta", "engine_network", (None, None), "[P, 17]")
    if theta.shape[1] < 5:
        raise ValueError(f"engine_network: theta must have >= 5 columns, got {theta.shape[1]}")
    if kernel is None:
        conv = torch.einsum("pk,bkxyz->pbxyz", theta[:, :4], data.shells)
    else:
        conv = periodic_conv3d(data.x, kernel).transpose(0, 1)
    return F.softplus(conv + theta[:, 4].view(-1, 1, 1, 1, 1))


def _engine_mdn(theta, k: int):
    p = theta[:, 5:].view(-1, 3, 2, k)  # rows (amplitude, mean, width) x (slopes, biases) x j
    return p[:, :, 0], p[:, :, 1]


def mixture_fields(model: str, theta: torch.Tensor, data: HaloField, const, kernel=None):
    """The mixture parameters of ``model`` ("engine" or "power_law") on the grid and at the
    halos: ((log_alpha, mu, sigma) each ``[P, B, n, n, n, 2]`` or broadcastable to it,
    (log_alpha, mu, sigma) each ``[P, H, K]``). theta: ``[P, D]``, D = :func:`n_params`."""
    if model == "engine":
        h = engine_network(theta, data, kernel)  # [P, B, n, n, n]
        slopes, biases = _engine_mdn(theta, const.n_gaussians)
        return (
            mixture_params(h, slopes, biases, const),
            mixture_params(data.at_halos(h), slopes, biases, const),
        )
    if model == "power_law":
        k = const.n_gaussians
        z = torch.zeros_like(theta[:, 1:]).view(-1, 3, k)
        la, mu, sig = mixture_params(0.0, z, theta[:, 1:].view(-1, 3, k), const)  # [P, k]
        beta = theta[:, 0].view(-1, 1, 1, 1, 1, 1)
        on_grid = (
            la.view(-1, 1, 1, 1, 1, k) + beta * data.x[None, ..., None],
            mu.view(-1, 1, 1, 1, 1, k),
            sig.view(-1, 1, 1, 1, 1, k),
        )
        x_h = data.at_halos(data.x)[None, :, None]  # [1, H, 1]
        at_halos = (la[:, None] + beta.view(-1, 1, 1) * x_h, mu[:, None], sig[:, None])
        return on_grid, at_halos
    raise ValueError(f"model: expected 'engine' or 'power_law', got {model!r}")


def n_params(model: str, const: EngineConstants = EngineConstants()) -> int:
    """Number of parameters of ``model`` (17 and 7 with 2 Gaussians)."""
    return len(param_names(model, const))


def log_likelihood(
    model: str,
    theta: torch.Tensor,
    data: HaloField,
    const: EngineConstants = EngineConstants(),
    kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """Poisson log-likelihood of the halos, in nats, under ``model``: "engine" or
    "power_law", theta ``[D]`` or ``[P, D]`` in the order of :func:`param_names` (D = 17 and
    7 for the paper's constants). Returns ``[]`` or ``[P]``:
    ``sum_halos ln lambda_v(ln M_i) - sum_voxels N_v``, with lambda the intensity per voxel
    and unit ln M and N_v the expected count above the threshold. ``kernel``
    ``[P, 3, 3, 3]`` replaces the engine's l = 0 kernel (to test the symmetry).

    theta's shape is checked, its values are not: this is the potential that HMC evaluates
    at every leapfrog step (a value check would synchronise a GPU each time); a NaN theta
    gives a NaN likelihood, which HMC counts as a divergence. ``data`` was checked when the
    :class:`HaloField` was made.
    """
    _check_data(data, "log_likelihood")
    single = theta.dim() == 1 if torch.is_tensor(theta) else False
    theta = _as_batch(theta, n_params(model, const), f"log_likelihood({model!r})")
    if kernel is not None:
        _check_shape(kernel, "kernel", "log_likelihood", (theta.shape[0], 3, 3, 3), "[P, 3, 3, 3]")
    theta = _expand(model, theta, const)
    grid, halos = mixture_fields(model, theta, data, const, kernel)
    v = data.voxel_volume
    expected = expected_count(*grid, const.log_mass_threshold, None, v)
    ll = log_intensity(data.log_mass, *halos, v).sum(-1) - expected.flatten(1).sum(-1)
    return ll[0] if single else ll


def expected_counts(
    model: str,
    theta: torch.Tensor,
    data: HaloField,
    const: EngineConstants = EngineConstants(),
    mass_range: tuple[float, float | None] | None = None,
) -> torch.Tensor:
    """Expected number of halos per voxel, ``[P, B, n, n, n]`` (theta ``[P, D]``) or
    ``[B, n, n, n]`` (theta ``[D]``), with mass in ``mass_range`` = (lo, hi) Msun/h (default:
    above the threshold; hi None: no upper limit)."""
    _check_data(data, "expected_counts")
    single = theta.dim() == 1 if torch.is_tensor(theta) else False
    theta = _as_batch(theta, n_params(model, const), f"expected_counts({model!r})")
    theta = _expand(model, theta, const)
    lo, hi = mass_range or (const.mass_threshold, None)
    lo = _check_real(lo, "mass_range (lo)", "expected_counts", low=0)
    if hi is not None:
        _check_real(hi, "mass_range (hi)", "expected_counts", low=lo)
    grid, _ = mixture_fields(model, theta, data, const)
    u_hi = None if hi is None else math.log(hi)
    n = expected_count(*grid, math.log(lo), u_hi, data.voxel_volume)
    n = n.expand(theta.shape[0], *data.x.shape)
    return n[0] if single else n


def _check_data(data, where: str) -> None:
    if not isinstance(data, HaloField):
        raise ValueError(f"{where}: data must be a HaloField, got {type(data).__name__}")


def _check_samples(samples, d: int, where: str) -> None:
    """Posterior draws ``[S, D]``: shape and finite values, once at entry."""
    if not torch.is_tensor(samples) or not samples.is_floating_point():
        raise ValueError(f"{where}: samples must be a float tensor [S, {d}]")
    _check_shape(samples, "samples", where, (None, d), f"[S, {d}]")
    _check_finite_values(samples, "samples", where)


def log_prior(theta: torch.Tensor, const: EngineConstants = EngineConstants()) -> torch.Tensor:
    """Gaussian prior N(0, prior_width^2) on every parameter, ``[..., D]`` -> ``[...]``
    (normalised)."""
    w = const.prior_width
    d = theta.shape[-1]
    return -0.5 * (theta / w).pow(2).sum(-1) - d * (math.log(w) + 0.5 * math.log(2 * math.pi))


def potential(model: str, data: HaloField, const: EngineConstants = EngineConstants()):
    """U(theta) = -ln likelihood - ln prior for ``model`` in {"engine", "power_law"}: a function
    ``[D]`` or ``[P, D]`` -> ``[]`` or ``[P]``, for HMC (theta's values are not checked, see
    :func:`log_likelihood`)."""
    n_params(model, const)  # checks the model name
    _check_data(data, "potential")

    def u(theta):
        return -(log_likelihood(model, theta, data, const) + log_prior(theta, const))

    return u


# --------------------------------------------------------------------------- fitting helpers


def initial_theta(
    model: str, const: EngineConstants = EngineConstants(), dtype=torch.float64
) -> torch.Tensor:
    """A starting point for the fits: zeros (the constants of :class:`EngineConstants`;
    beta = 1 for the power law), with the Gaussians pulled apart (each mean 2 above the
    previous one, the first amplitude lower) so that the symmetric saddle between them is
    left at once."""
    names = param_names(model, const)
    theta = torch.zeros(len(names), dtype=dtype)
    if model == "power_law":
        theta[0] = 1.0
    if const.n_gaussians > 1 and const.head == "sketch":
        theta[names.index("a'_1")] = -1.0
        for j in range(2, const.n_gaussians + 1):
            theta[names.index(f"m'_{j}")] = 2.0
    return theta


def posterior_log_likelihood(
    model: str,
    samples: torch.Tensor,
    data: HaloField,
    const: EngineConstants = EngineConstants(),
    chunk: int = 8,
) -> torch.Tensor:
    """Log-likelihood of ``data`` at each of ``samples`` ``[S, D]``, ``[S]`` (in chunks of
    ``chunk`` parameter sets to bound memory)."""
    _check_samples(samples, n_params(model, const), "posterior_log_likelihood")
    _check_count(chunk, "chunk", "posterior_log_likelihood")
    with torch.no_grad():
        return torch.cat([log_likelihood(model, s, data, const) for s in samples.split(chunk)])


def mass_function(
    model: str,
    samples: torch.Tensor,
    data: HaloField,
    edges,
    const: EngineConstants = EngineConstants(),
    chunk: int = 8,
) -> torch.Tensor:
    """Predicted number of halos in each mass bin, summed over all voxels of ``data``, at
    each of ``samples`` ``[S, D]``: ``[S, K]`` for bin edges ``edges`` ``[K + 1]`` (Msun/h)."""
    _check_samples(samples, n_params(model, const), "mass_function")
    _check_count(chunk, "chunk", "mass_function")
    edges = _check_edges(edges, "mass_function").tolist()
    out = []
    with torch.no_grad():
        for s in samples.split(chunk):
            per_bin = [
                expected_counts(model, s, data, const, (lo, hi)).flatten(1).sum(-1)
                for lo, hi in zip(edges[:-1], edges[1:], strict=True)
            ]
            out.append(torch.stack(per_bin, -1))
    return torch.cat(out)


def measured_mass_function(data: HaloField, edges) -> np.ndarray:
    """Number of halos of ``data`` in each mass bin, ``[K]`` int64 (edges in Msun/h)."""
    _check_data(data, "measured_mass_function")
    edges = _check_edges(edges, "measured_mass_function")
    return np.histogram(data.log_mass.cpu().numpy(), np.log(edges))[0]


def _check_edges(edges, where: str) -> np.ndarray:
    """Mass bin edges ``[K + 1]``, Msun/h: finite, > 0 and increasing."""
    e = np.asarray(edges, dtype=np.float64) if np.ndim(edges) == 1 else None
    if e is None or len(e) < 2:
        raise ValueError(f"{where}: edges must be [K + 1] >= 2 mass bin edges (Msun/h)")
    _check_finite_values(e, "edges", where)
    if not (e[0] > 0 and (np.diff(e) > 0).all()):
        raise ValueError(f"{where}: edges must be > 0 and increasing (Msun/h), got {e.tolist()}")
    return e


#: the paper's engine: 2 Gaussians in the sketch's parametrisation, 17 parameters
PAPER = EngineConstants()
#: an identifiable engine for sampling: one Gaussian parametrised at the threshold, and the
#: network output h is the log amplitude itself (a_1 = 1, a'_1 = 0: no scale or offset of h
#: to trade against the head), so ln n(M_th) = ln(1e-4) + softplus(conv + b); 9 parameters
IDENTIFIABLE = EngineConstants(
    initial_amplitude=math.log(1e-4),
    n_gaussians=1,
    head="threshold",
    engine_fixed=(("a_1", 1.0), ("a'_1", 0.0)),
)
