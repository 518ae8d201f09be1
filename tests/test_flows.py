"""Fourier-space flow: splines, exact log-determinants against autograd's Jacobian."""

import pytest
import torch

from physml import flows, grf


def _jacobian_logdet(f, x):
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view_as(x)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("conditional", [False, True])
def test_every_layer_logdet_equals_autograd(conditional):
    torch.manual_seed(0)
    cls = flows.ConditionalFourierFlow if conditional else flows.FourierFlow
    flow = cls(4, grf.GRF_BOX, n_layers=3, n_knots=6, n_bins=5, bound=2.0)
    with torch.no_grad():  # random splines, but not so extreme that slogdet loses digits
        for p in flow.parameters():
            p.normal_(0.0, 0.3 if conditional else 0.5)
    theta = torch.tensor([[0.25, 0.7]], dtype=torch.float64) if conditional else None
    params = flow.layer_params(1, theta)
    x = 1.5 * torch.randn(1, 4, 4, 4, dtype=torch.float64)
    for i in range(flow.n_layers):
        y, logdet = flow.layer(x, params[:, i])
        ref = _jacobian_logdet(lambda v, i=i: flow.layer(v, params[:, i])[0], x)
        assert abs(float(logdet.detach()) - float(ref)) < 1e-5
        x = y
    # the whole flow: the sum of the layers
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    _, total = flow(x0, theta)
    assert (
        abs(float(total.detach()) - float(_jacobian_logdet(lambda v: flow(v, theta)[0], x0))) < 1e-5
    )


def test_rq_spline_is_monotone_and_its_derivative_is_right():
    torch.manual_seed(1)
    params = torch.randn(2, flows.n_rq_params(6), dtype=torch.float64)
    x = torch.linspace(-4, 4, 2001, dtype=torch.float64).expand(2, -1).clone()
    y, logd = flows.rq_spline(x, params, bound=3.0)
    assert torch.all(y[:, 1:] > y[:, :-1])
    # identity outside the bound, continuous at it
    out = x.abs() > 3.0
    assert torch.equal(y[out], x[out])
    xg = x.clone().requires_grad_(True)
    yg, _ = flows.rq_spline(xg, params, bound=3.0)
    (grad,) = torch.autograd.grad(yg.sum(), xg)
    assert torch.allclose(torch.exp(logd), grad, rtol=1e-10, atol=1e-12)
    # zero parameters: the identity
    y0, l0 = flows.rq_spline(x, torch.zeros_like(params), bound=3.0)
    assert torch.allclose(y0, x, atol=1e-12) and torch.allclose(
        l0, torch.zeros_like(l0), atol=1e-12
    )


def test_cubic_spline_interpolates_and_reproduces_cubics():
    v = torch.tensor([[0.0, 1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    u = torch.arange(5, dtype=torch.float64)
    assert torch.allclose(flows.cubic_spline(u, v), v)
    # Catmull-Rom reproduces quadratics exactly between interior knots
    knots = torch.arange(6, dtype=torch.float64)
    q = (0.3 * knots**2 - knots + 2).unsqueeze(0)
    uu = torch.linspace(1, 4, 31, dtype=torch.float64)
    assert torch.allclose(flows.cubic_spline(uu, q)[0], 0.3 * uu**2 - uu + 2, atol=1e-12)


def test_optimal_linear_flow_reproduces_the_analytic_likelihood():
    # T = 1 / sqrt(lambda) exactly on the modes, psi = identity: log p equals the GRF's
    n, box = 8, grf.GRF_BOX
    lam = grf.eigenvalues(grf.power_on_modes(0.3, 0.8, n, box), n, box)
    x = torch.stack([grf.sample_field(0.3, 0.8, n, box, seed=s) for s in range(3)])
    flow = flows.FourierFlow(n, box, n_layers=1)
    zk = torch.fft.rfftn(x, dim=(-3, -2, -1)) / lam.sqrt()
    z = torch.fft.irfftn(zk, s=(n, n, n))
    ref = grf.log_likelihood_eigen(x, lam)
    w = grf.mode_weights(n)
    logdet = -0.5 * (w * torch.log(lam)).sum()
    mine = (
        -0.5 * (z**2).sum(dim=(-3, -2, -1))
        - 0.5 * n**3 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
        + logdet
    )
    assert torch.allclose(mine, ref, atol=1e-8)
    assert flow.log_prob(x).shape == (3,)


def test_bad_inputs():
    flow = flows.FourierFlow(4, grf.GRF_BOX)
    with pytest.raises(ValueError, match="x: expected"):
        flow.log_prob(torch.zeros(1, 4, 4, 6))
    cflow = flows.ConditionalFourierFlow(4, grf.GRF_BOX)
    with pytest.raises(ValueError, match="theta"):
        cflow.log_prob(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="even"):
        flows.FourierFlow(5, grf.GRF_BOX)


def test_log_theta_to_unit_maps_the_prior_box_in_log():
    theta = torch.tensor(
        [[0.1, 0.6], [0.5, 1.0], [(0.1 * 0.5) ** 0.5, (0.6 * 1.0) ** 0.5]], dtype=torch.float64
    )
    u = flows.log_theta_to_unit(theta)
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(u, expected, atol=1e-12)
