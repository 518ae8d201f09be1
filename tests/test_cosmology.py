"""physml.cosmology against colossus (an independent code) and closed forms."""

import numpy as np
import pytest
import torch

from physml.cosmology import Cosmology, tophat_window

colossus = pytest.importorskip("colossus.cosmology.cosmology")

PARAMS = [(0.1, 0.6), (0.3, 0.8), (0.5, 1.0), (0.2, 0.95)]


def _colossus(om, s8):
    return colossus.setCosmology(
        f"physml_{om}_{s8}",
        params=dict(flat=True, H0=67.11, Om0=om, Ob0=0.049, sigma8=s8, ns=0.9624, relspecies=False),
    )


@pytest.mark.parametrize("om,s8", PARAMS)
def test_power_spectrum_matches_colossus(om, s8):
    k = np.logspace(-3, 1, 60)
    ref = _colossus(om, s8).matterPowerSpectrum(k, model="eisenstein98_zb")
    ours = Cosmology(om, s8).linear_power(torch.tensor(k)).numpy()
    assert np.max(np.abs(ours / ref - 1)) < 0.01


@pytest.mark.parametrize("om,s8", PARAMS)
def test_growth_factor_matches_colossus(om, s8):
    a = np.linspace(0.02, 1.0, 50)
    ref = _colossus(om, s8).growthFactor(1 / a - 1)
    ours = Cosmology(om, s8).growth_factor(torch.tensor(a)).numpy()
    assert np.max(np.abs(ours / ref - 1)) < 1e-3


@pytest.mark.parametrize("om,s8", PARAMS)
def test_sigma8_normalisation_and_sigma_r(om, s8):
    c = Cosmology(om, s8)
    assert abs(float(c.sigma_r(8.0)) - s8) < 1e-6
    r = np.array([2.0, 5.0, 15.0])
    ref = _colossus(om, s8).sigma(r, 0.0, ps_args={"model": "eisenstein98_zb"})
    assert np.max(np.abs(c.sigma_r(torch.tensor(r)).numpy() / ref - 1)) < 2e-3


def test_tophat_window_closed_form_and_limit():
    x = torch.tensor([1e-6, 1e-4, 0.5, 2.0, 10.0], dtype=torch.float64)
    xs = x.numpy()
    ref = 3 * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    ref[:2] = 1.0 - xs[:2] ** 2 / 10
    assert np.allclose(tophat_window(x).numpy(), ref, rtol=1e-9, atol=1e-12)


def test_growth_derivative_matches_autograd_and_einstein_de_sitter():
    c = Cosmology(0.3, 0.8)
    a = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(c.growth_factor(a).sum(), a)
    assert torch.allclose(grad, c.growth_derivative(a.detach()), rtol=1e-8)
    # matter domination: D grows like a, so f -> 1 at early times
    assert abs(float(c.growth_rate(0.01)) - 1.0) < 2e-3
    # Omega_m = 1 is Einstein-de Sitter: D = a exactly
    eds = Cosmology(1.0, 0.8)
    a = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(eds.growth_factor(a), a, rtol=1e-8)


def test_differentiable_in_parameters():
    om = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    c = Cosmology(om, s8)
    p = c.linear_power(torch.tensor(0.5))
    dom, ds8 = torch.autograd.grad(p, (om, s8))
    # P is proportional to sigma_8^2: dP/dsigma_8 = 2 P / sigma_8
    assert torch.isclose(ds8, 2 * p / s8, rtol=1e-10)
    # Omega_m against a central finite difference
    h = 1e-5
    fd = (Cosmology(0.3 + h, 0.8).linear_power(0.5) - Cosmology(0.3 - h, 0.8).linear_power(0.5)) / (
        2 * h
    )
    assert torch.isclose(dom, fd, rtol=1e-5)


def test_bad_parameters_refused():
    with pytest.raises(ValueError, match="omega_m"):
        Cosmology(0.0, 0.8)
    with pytest.raises(ValueError, match="sigma_8"):
        Cosmology(0.3, -0.1)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sigma_8 must be finite"):
            Cosmology(0.3, bad)
    with pytest.raises(ValueError, match="omega_m"):
        Cosmology(float("nan"), 0.8)
