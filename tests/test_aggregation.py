"""physml.aggregation against plain PyTorch / PyG: values and gradients of gather,
scatter_sum and scatter_max, on the CSR path (CPU) and the index_add / scatter_reduce path
(other devices, forced here by dropping the matrix)."""

import pytest
import torch
from torch_geometric.utils import scatter

from physml.aggregation import Incidence, gather, scatter_max, scatter_sum


def _incidence(index, n, dtype, csr):
    inc = Incidence(index, n, dtype)
    if not csr:
        inc.matrix = None
    return inc


def _cases():
    g = torch.Generator().manual_seed(0)
    unsorted = torch.randint(0, 40, (300,), generator=g)
    yield "sorted", unsorted.sort().values, 40
    yield "unsorted", unsorted, 40
    yield "isolated nodes", torch.tensor([5, 5, 2, 7, 2, 5]), 10
    yield "no edges", torch.zeros(0, dtype=torch.long), 4


@pytest.mark.parametrize("csr", [True, False], ids=["csr", "index_add"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_matches_plain_pytorch(case, dtype, csr):
    _, index, n = case
    inc = _incidence(index, n, dtype, csr)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=dtype, requires_grad=True)
    src = torch.randn(index.numel(), 3, generator=g, dtype=dtype, requires_grad=True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}

    torch.testing.assert_close(inc.degree, torch.bincount(index, minlength=n).to(dtype))
    pairs = [
        (lambda: gather(x, inc), lambda: x[index], x),
        (lambda: scatter_sum(src, inc), lambda: scatter(src, index, 0, dim_size=n), src),
        (
            lambda: scatter_max(src, inc),
            lambda: scatter(src, index, 0, dim_size=n, reduce="max"),
            src,
        ),
    ]
    for ours, ref, leaf in pairs:
        out, expected = ours(), ref()
        torch.testing.assert_close(out, expected, **tol)
        w = torch.randn(out.shape, generator=g, dtype=dtype)
        (grad,) = torch.autograd.grad((out * w).sum(), leaf)
        (expected_grad,) = torch.autograd.grad((expected * w).sum(), leaf)
        torch.testing.assert_close(grad, expected_grad, **tol)


def test_max_of_a_node_without_edges_is_zero():
    inc = Incidence(torch.tensor([1, 1]), 3)
    out = scatter_max(torch.tensor([[-2.0], [-3.0]]), inc)
    torch.testing.assert_close(out, torch.tensor([[0.0], [-2.0], [0.0]]))


def test_gradcheck():
    index = torch.tensor([3, 0, 3, 1, 0, 3])
    inc = Incidence(index, 5, torch.float64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    src = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather(t, inc), (x,))
    assert torch.autograd.gradcheck(lambda t: scatter_sum(t, inc), (src,))
    assert torch.autograd.gradcheck(lambda t: scatter_max(t, inc), (src,))


def test_bad_index():
    with pytest.raises(ValueError, match="1-D long"):
        Incidence(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="< num_nodes = 2"):
        Incidence(torch.tensor([0, 2]), 2)


def test_other_dtype_than_the_matrix_falls_back():
    index = torch.tensor([0, 2, 2])
    inc = Incidence(index, 3, torch.float32)
    src = torch.tensor([[1.0], [2.0], [-4.0]], dtype=torch.float64)
    torch.testing.assert_close(scatter_sum(src, inc), scatter(src, index, 0, dim_size=3))
    torch.testing.assert_close(
        scatter_max(src, inc), scatter(src, index, 0, dim_size=3, reduce="max")
    )


def test_bfloat16_takes_the_index_path():
    index = torch.tensor([2, 0, 2])
    inc = Incidence(index, 3, torch.bfloat16)
    assert inc.matrix is None
    src = torch.tensor([[1.0], [2.0], [-4.0]], dtype=torch.bfloat16)
    torch.testing.assert_close(scatter_sum(src, inc), scatter(src, index, 0, dim_size=3))
    torch.testing.assert_close(
        scatter_max(src, inc), scatter(src, index, 0, dim_size=3, reduce="max")
    )


@pytest.mark.parametrize("csr", [True, False], ids=["csr", "index_add"])
def test_tied_maxima_split_the_gradient(csr):
    """Duplicate edges tie: the gradient of the maximum is split between them, as
    autograd's scatter_reduce does, so each node's edge gradients sum to its own."""
    index = torch.tensor([0, 0, 1, 0])
    inc = _incidence(index, 2, torch.float64, csr)
    src = torch.tensor([[3.0, 1.0], [3.0, 5.0], [2.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    src.requires_grad_()
    grad = torch.tensor([[1.0, 10.0], [100.0, 1000.0]], dtype=torch.float64)
    (ours,) = torch.autograd.grad(scatter_max(src, inc), src, grad)
    (ref,) = torch.autograd.grad(scatter(src, index, 0, dim_size=2, reduce="max"), src, grad)
    torch.testing.assert_close(ours, ref)
    expected = [[1 / 3, 0.0], [1 / 3, 5.0], [100.0, 1000.0], [1 / 3, 5.0]]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64))
    per_node = scatter(ours, index, 0, dim_size=2)  # each maximum passes on its gradient once
    torch.testing.assert_close(per_node, grad)


def test_degree_is_counted_exactly_in_low_precision():
    index = torch.zeros(300, dtype=torch.long)
    assert float(Incidence(index, 1, torch.bfloat16).degree[0]) == 300.0
    if torch.cuda.is_available():
        assert float(Incidence(index.cuda(), 1, torch.bfloat16).degree[0]) == 300.0
