r"""Gathers from nodes to edges and pools from edges to nodes, with fast backward passes.

A message-passing layer does two things with an edge list: it **gathers** node features
onto the edges (``x[index]``, :math:`N \to E` rows) and it **pools** edge features onto the
nodes (sum / max over the edges with the same ``index``, :math:`E \to N` rows). The two
are adjoint: the backward pass of a gather is a sum-pool and the backward pass of a
sum-pool is a gather. Autograd's own backward passes for ``x[index]`` and
``scatter_add`` / ``index_add`` are general-purpose and slow on a CPU. Here both
directions use the fastest kernel there is:

* a gather is ``index_select`` (forward, and backward of a sum-pool);
* a sum-pool is a product with the :math:`N \times E` 0/1 **incidence matrix**
  :math:`M_{ik} = [\mathrm{index}_k = i]`, stored as a ``torch.sparse_csr_tensor`` and
  multiplied with MKL's sparse kernels on a CPU (much faster than ``index_add_`` when
  ``index`` is sorted, as the targets of :func:`physml.graphs.radius_graph` are, and still
  faster when not); on other devices it is ``index_add_``;
* a max-pool is MKL's CSR ``amax`` product on a CPU and ``scatter_reduce_`` elsewhere; its
  backward pass sends the gradient of each maximum to the edges that attain it.

Why physml owns this rather than calling ``torch_geometric.utils.scatter`` or PyG's sparse
adjacency path: autograd's backward passes are the slow part there (it transposes the CSR
matrix on every call; ``scatter_reduce``'s max backward builds several ``[E, F]`` masks;
``x[index]``'s backward is a sorting ``index_put_``). On a lecture-sized batch on a 2-core
CPU (``benchmarks/bench_aggregation.py``), forward + backward is 8 times faster for the max
pool, 2.4 times for the sum pool and 4 to 7 times for a gather; with
:meth:`physml.models.EdgeModel.message` a whole training step is 1.8 times faster than
with PyG's ``MetaLayer`` and ``scatter`` (``benchmarks/bench_training.py``).

:class:`Incidence` holds the matrix, built once per batch and shared by all layers. The
functions are custom ``torch.autograd.Function``\ s: once differentiable (no double
backward), and not for ``torch.func`` transforms.
``tests/test_aggregation.py`` compares every function, values and gradients, with
``x[index]`` and ``torch_geometric.utils.scatter``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["Incidence", "gather", "scatter_max", "scatter_sum"]


class Incidence:
    r"""The edges that point at each node: ``index`` ``[E]`` with values in ``[0, N)``.

    Args:
        index: ``[E]`` long, e.g. ``edge_index[1]`` (targets) or ``edge_index[0]``.
        num_nodes: :math:`N`.
        dtype: float dtype of the features it will pool (of :attr:`degree` and the
            matrix; features of another dtype take the ``index_add_`` path).

    Attributes:
        index: ``[E]`` long.
        num_nodes: :math:`N`.
        degree: ``[N]`` of ``dtype``, the number of edges with each index (counted exactly,
            then rounded to ``dtype``).
        matrix: the :math:`N \times E` CSR incidence matrix (CPU tensors, float32 or
            float64), else ``None``.
    """

    def __init__(self, index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float32):
        if index.dim() != 1 or index.dtype != torch.long:
            raise ValueError(
                f"index: expected a 1-D long tensor, got {index.dtype} {list(index.shape)}"
            )
        self.index = index
        self.num_nodes = int(num_nodes)
        n_edges = index.numel()
        self.matrix = None
        self.nonempty = None  # number of indices with at least one edge (CPU only)
        if index.device.type == "cpu":  # MKL's sparse kernels: float32 / float64 only
            counts = torch.bincount(index, minlength=self.num_nodes)
            if counts.numel() > self.num_nodes:
                raise ValueError(f"index: values must be < num_nodes = {self.num_nodes}")
            self.degree = counts.to(dtype)
            self.nonempty = int((counts > 0).sum())
            if dtype not in (torch.float32, torch.float64):
                return  # no matrix: the index_add_ / scatter_reduce_ path
            if n_edges > 1 and not bool((index[1:] >= index[:-1]).all()):
                order = torch.argsort(index, stable=True)
            else:
                order = torch.arange(n_edges)
            crow = torch.zeros(self.num_nodes + 1, dtype=torch.long)
            torch.cumsum(counts, 0, out=crow[1:])
            with warnings.catch_warnings():  # "sparse CSR support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                self.matrix = torch.sparse_csr_tensor(
                    crow,
                    order,
                    torch.ones(n_edges, dtype=dtype),
                    size=(self.num_nodes, n_edges),
                    check_invariants=False,
                )
        else:  # counted in float32 (exact to 2**24), whatever ``dtype`` is
            ones = torch.ones(n_edges, device=index.device)
            counts = torch.zeros(self.num_nodes, device=index.device).index_add_(0, index, ones)
            self.degree = counts.to(dtype)

    def _use_matrix(self, src: Tensor) -> bool:
        return self.matrix is not None and src.numel() > 0 and src.dtype == self.matrix.dtype

    def _sum(self, src: Tensor) -> Tensor:
        """``[E, F]`` -> ``[N, F]`` sums, no autograd."""
        if self._use_matrix(src):
            return torch.sparse.mm(self.matrix, src.contiguous())
        out = src.new_zeros(self.num_nodes, src.size(1))
        return out.index_add_(0, self.index, src)

    def _max(self, src: Tensor) -> Tensor:
        """``[E, F]`` -> ``[N, F]`` maxima (0 where no edge), no autograd."""
        if self._use_matrix(src):
            return torch.sparse.mm(self.matrix, src.contiguous(), "amax")
        out = src.new_zeros(self.num_nodes, src.size(1))
        index = self.index[:, None].expand_as(src)
        return out.scatter_reduce_(0, index, src, "amax", include_self=False)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, inc: Incidence) -> Tensor:
        ctx.inc = inc
        return x.index_select(0, inc.index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return (ctx.inc._sum(grad) if ctx.needs_input_grad[0] else None), None


class _ScatterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: Tensor, inc: Incidence) -> Tensor:
        ctx.inc = inc
        return inc._sum(src)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return grad.index_select(0, ctx.inc.index), None


def _count(mask: Tensor) -> int:
    """Sum of a 0/1 float tensor, exactly (float32 sums of integers are exact below 2**24)."""
    return int(mask.sum() if mask.numel() < 2**24 else mask.sum(dtype=torch.float64))


class _ScatterMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: Tensor, inc: Incidence) -> Tensor:
        out = inc._max(src)
        ctx.inc = inc
        ctx.save_for_backward(src, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        src, out = ctx.saved_tensors
        inc = ctx.inc
        hit = out.index_select(0, inc.index)
        torch.eq(src, hit, out=hit)  # 1.0 where the edge attains the maximum (float: faster)
        out_grad = grad.index_select(0, inc.index).mul_(hit)
        # Where several edges share a maximum, split its gradient between them. Counting the
        # ties costs as much again as the rest; on the CPU it is skipped when there are none
        # (one hit per non-empty row and column, the usual case for float32 messages).
        if inc.nonempty is None or _count(hit) != inc.nonempty * hit.size(1):
            out_grad.div_(inc._sum(hit).clamp_(min=1).index_select(0, inc.index))
        return out_grad, None


def gather(x: Tensor, inc: Incidence) -> Tensor:
    """``x[inc.index]``: ``[N, F]`` -> ``[E, F]``; backward pass a sum-pool."""
    return _Gather.apply(x, inc)


def scatter_sum(src: Tensor, inc: Incidence) -> Tensor:
    """Sum of the rows of ``src`` ``[E, F]`` with the same index: ``[N, F]`` (0 where there
    is none); backward pass a gather."""
    return _ScatterSum.apply(src, inc)


def scatter_max(src: Tensor, inc: Incidence) -> Tensor:
    """Maximum of the rows of ``src`` ``[E, F]`` with the same index, per column: ``[N, F]``,
    0 (never ``-inf``) where there is none.

    The backward pass routes the gradient of each maximum to the rows that attain it,
    split equally between tied rows (as autograd's ``scatter_reduce`` does; ties occur with
    duplicate edges, identical messages or low-precision floats). Not twice
    differentiable.
    """
    return _ScatterMax.apply(src, inc)
