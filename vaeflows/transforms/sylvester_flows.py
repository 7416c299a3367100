"""Sylvester normalizing flows (van den Berg et al. 2018): O-SNF, H-SNF and T-SNF.

One step is ``z' = z + Q R1 tanh(R2 Q^T z + b)`` with ``Q`` of shape ``(D, M)`` with orthonormal
columns and ``R1``, ``R2`` upper triangular ``(M, M)``. By Sylvester's determinant identity
``det dz'/dz = det(I_M + diag(tanh'(R2 Q^T z + b)) R2 R1)``, and ``R2 R1`` is upper triangular, so

    ``log|det| = sum_i log|1 + R1_ii R2_ii tanh'(R2 Q^T z + b)_i|``.

The diagonals are ``tanh``-bounded, ``R1_ii = tanh(d1_i)``, ``R2_ii = tanh(d2_i)``, so that
``|R1_ii R2_ii| < 1`` and, as ``0 < tanh' <= 1``, every factor is positive (invertibility).
The three variants differ in ``Q``:

* **O-SNF** (``sylvester-orthogonal``): ``M = num_ortho_vecs`` columns made orthonormal by the
  iteration ``Q <- Q (I + (I - Q^T Q) / 2)`` from a Frobenius-normalized start, until
  ``|Q^T Q - I|_F`` is below a tolerance (1e-6, or 1e-12 in float64; never below the rounding
  floor ``4 eps M``) or 100 iterations;
* **H-SNF** (``sylvester-householder``): ``Q`` (``M = D``) a product of ``num_householder``
  reflections ``I - 2 v v^T / |v|^2``;
* **T-SNF** (``sylvester-triangular``): ``Q = I`` on even steps and the reversal permutation on odd
  steps (``M = D``).

vaeflows owns these flows: Pyro 1.9.2's ``Sylvester`` returns a wrong log-determinant once its
parameters leave initialization, builds ``torch.eye`` on the CPU whatever the input's device, and
has no conditional form. No analytic inverse: a Sylvester flow scores only its own samples.

References:
    van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows for Variational
    Inference", UAI 2018; reference code github.com/riannevdberg/sylvester-flows.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch
from torch.distributions import Transform

from vaeflows.checks import check_int

from .base import FlowFamily, FunctionStep, Params

__all__ = [
    "sylvester",
    "orthogonalize",
    "householder_matrix",
    "sylvester_orthogonal_family",
    "sylvester_householder_family",
    "sylvester_triangular_family",
]


def sylvester(
    z: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, q: torch.Tensor, b: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Sylvester step ``z' = z + q r1 tanh(r2 q^T z + b)`` and its ``log|det dz'/dz|``.

    Args:
        z: ``(..., D)``.
        r1, r2: upper triangular ``(..., M, M)`` with ``|r1_ii r2_ii| < 1``.
        q: ``(..., D, M)`` with orthonormal columns.
        b: ``(..., M)``.
        (Leading dims broadcast against each other.)

    Returns:
        ``z'`` of shape ``(..., D)`` and ``log|det|`` of shape ``(...)``.
    """
    # Dims of z left of the parameters' batch dims (importance samples, particles) become the
    # columns of one matrix, so that per-point (M, M) matrices are not copied for every sample.
    batch_dims = max(r1.dim() - 2, r2.dim() - 2, q.dim() - 2, b.dim() - 1)
    extra = max(z.dim() - 1 - batch_dims, 0)
    columns = z.reshape(-1, *z.shape[extra:]).movedim(0, -1)  # (..., D, S)
    h = torch.tanh(r2 @ (q.transpose(-2, -1) @ columns) + b.unsqueeze(-1))  # (..., M, S)
    dz = q @ (r1 @ h)  # (..., D, S)
    diag = torch.diagonal(r1, dim1=-2, dim2=-1) * torch.diagonal(r2, dim1=-2, dim2=-1)
    ladj = torch.log1p(diag.unsqueeze(-1) * (1 - h * h)).sum(-2)  # (..., S)
    dz, ladj = dz.movedim(-1, 0), ladj.movedim(-1, 0)
    # (shapes as tuples: an unbatched z has a 0-dim log-det, and reshape() needs a shape)
    return z + dz.reshape(z.shape[:extra] + dz.shape[1:]), ladj.reshape(z.shape[:extra] + ladj.shape[1:])


def _tolerance(dtype: torch.dtype, m: int) -> float:
    """The paper's 1e-6 (1e-12 in float64), or the rounding floor of ``Q^T Q`` if that is larger."""
    return max(1e-12 if dtype == torch.float64 else 1e-6, 4 * torch.finfo(dtype).eps * m)


def orthogonalize(
    q: torch.Tensor, max_iter: int = 100, tol: Optional[float] = None, check_every: Optional[int] = None
) -> torch.Tensor:
    """Make the columns of ``q`` (``(..., D, M)``, ``M <= D``) orthonormal, differentiably.

    Starts from ``q / |q|_F`` (all singular values in ``(0, 1]``) and iterates
    ``Q <- Q (I + (I - Q^T Q) / 2)``, which drives every singular value to 1 (quadratically near
    convergence), until ``max |Q^T Q - I|_F <= tol`` over the batch, testing every iterate up to
    and including the last. Warns if ``max_iter`` iterations do not reach ``tol``.

    Whether to stop is a question the host asks of the device, which on a GPU waits for all the work
    queued before it. ``check_every`` (default: 1 on the CPU, where asking costs nothing, 8
    elsewhere) asks only every so many iterations; in between, the device itself holds ``Q`` at the
    first iterate that met ``tol``. The result, and its gradient, are those of stopping at that
    iterate, whatever ``check_every`` is (``tests/transforms/test_posterior_flows.py``). Under a
    JIT trace (``JitTrace_ELBO``) the host never asks: all ``max_iter`` iterations are recorded,
    the device holding the first converged iterate, so the traced graph stays right when later
    parameters need more iterations than the traced ones did (and cannot warn).
    """
    tol = _tolerance(q.dtype, q.shape[-1]) if tol is None else tol
    tracing = torch.jit.is_tracing()
    if check_every is None:
        check_every = 1 if q.device.type == "cpu" and not tracing else 8
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    q = q / torch.linalg.matrix_norm(q, keepdim=True)
    done = None  # on the device: has an iterate met tol?
    for i in range(max_iter + 1):  # iterates 0 .. max_iter, each tested
        error = q.transpose(-2, -1) @ q - eye
        converged = torch.linalg.matrix_norm(error).max() <= tol
        if check_every == 1 and not tracing:
            if converged:
                return q
        else:
            done = converged if done is None else done | converged
            if not tracing and ((i + 1) % check_every == 0 or i == max_iter) and done:
                return q
        if i == max_iter:
            break
        update = q - 0.5 * q @ error
        q = update if done is None else torch.where(done, q, update)
    if tracing:
        return q
    warnings.warn(
        f"orthogonalize: |Q^T Q - I|_F did not reach {tol:g} in {max_iter} iterations; "
        "the Sylvester log-determinant is approximate for this batch"
    )
    return q


def householder_matrix(v: torch.Tensor) -> torch.Tensor:
    """The product ``H_(n-1) ... H_0`` of reflections ``H_i = I - 2 v_i v_i^T / |v_i|^2``.

    Built by rank-one updates ``Q <- Q - 2 v_i (v_i^T Q)`` from ``Q = I``, without forming the
    reflections (5 times faster forward and backward than dense products at D = 40, H = 8:
    ``benchmarks/results/step_overhead.md``).

    Args:
        v: ``(..., n, D)`` reflection vectors.

    Returns:
        ``(..., D, D)`` orthogonal matrices.
    """
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    dim = v.shape[-1]
    q = torch.eye(dim, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], dim, dim)
    for i in range(v.shape[-2]):
        vi = v[..., i, :].unsqueeze(-1)  # (..., D, 1)
        q = q - 2 * vi * (vi.transpose(-2, -1) @ q)
    return q


def _triangular(params: Params) -> Tuple[torch.Tensor, torch.Tensor]:
    """``R1``, ``R2`` from one full matrix (strict upper part of it and of its transpose, as in
    the reference code) and ``tanh``-bounded diagonals."""
    full = params["full"]
    m = full.shape[-1]
    strict = torch.ones(m, m, dtype=full.dtype, device=full.device).triu(diagonal=1)
    r1 = full * strict + torch.diag_embed(torch.tanh(params["diag1"]))
    r2 = full.transpose(-2, -1) * strict + torch.diag_embed(torch.tanh(params["diag2"]))
    return r1, r2


def _steps(params: Params, q: torch.Tensor) -> List[Transform]:
    """``K`` Sylvester steps from raw parameters with a leading step dim and ``q`` ``(..., K, D, M)``."""
    r1, r2 = _triangular(params)
    b = params["b"]
    return [
        FunctionStep(sylvester, r1[..., k, :, :], r2[..., k, :, :], q[..., k, :, :], b[..., k, :])
        for k in range(b.shape[-2])
    ]


def _orthogonal_steps(params: Params) -> List[Transform]:
    return _steps(params, orthogonalize(params["q"]))


def _householder_steps(params: Params) -> List[Transform]:
    return _steps(params, householder_matrix(params["v"]))


def _triangular_steps(params: Params) -> List[Transform]:
    b = params["b"]
    num_flows, dim = b.shape[-2:]
    eye = torch.eye(dim, dtype=b.dtype, device=b.device)
    q = torch.stack([eye if k % 2 == 0 else eye.flip(-1) for k in range(num_flows)])
    return _steps(params, q)


def _shared_shapes(m: int) -> dict:
    return {"full": (m, m), "diag1": (m,), "diag2": (m,), "b": (m,)}


def sylvester_orthogonal_family(latent_dim: int, num_ortho_vecs: Optional[int] = None) -> FlowFamily:
    """O-SNF steps; ``num_ortho_vecs`` is the paper's ``M`` (default ``min(D, 8)``, the paper's
    code default being 8 for ``D = 64``)."""
    m = min(latent_dim, 8) if num_ortho_vecs is None else check_int("num_ortho_vecs", num_ortho_vecs)
    if m > latent_dim:
        raise ValueError(f"num_ortho_vecs must be an integer in [1, latent_dim={latent_dim}], got {m!r}")
    shapes = {**_shared_shapes(m), "q": (latent_dim, m)}
    return FlowFamily("sylvester-orthogonal", shapes, _orthogonal_steps, False)


def sylvester_householder_family(latent_dim: int, num_householder: int = 8) -> FlowFamily:
    """H-SNF steps; ``num_householder`` reflections per step make ``Q`` (the paper's ``H``)."""
    num_householder = check_int("num_householder", num_householder)
    shapes = {**_shared_shapes(latent_dim), "v": (num_householder, latent_dim)}
    return FlowFamily("sylvester-householder", shapes, _householder_steps, False)


def sylvester_triangular_family(latent_dim: int) -> FlowFamily:
    """T-SNF steps: ``Q`` alternates between the identity and the reversal permutation."""
    return FlowFamily("sylvester-triangular", _shared_shapes(latent_dim), _triangular_steps, False)
