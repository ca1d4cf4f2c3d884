"""The GP's log marginal likelihood and its gradient, for the world model's one kernel.

scikit-learn fits the hyperparameters of ``ConstantKernel * Matern(ARD, nu=2.5) +
WhiteKernel`` by calling ``log_marginal_likelihood`` through its generic kernel
machinery, which rebuilds parameter objects on every call: on the few dozen trials of a
typical history that bookkeeping, not the algebra, was about 5 ms of each evaluation and
most of a cycle's decision time (each fit and each cross-validation fold evaluates it a
few dozen times). :func:`negative_log_likelihood` computes the same quantity and gradient
in closed form with numpy; scikit-learn still conditions and predicts with the result
(:class:`~sklearn.gaussian_process.GaussianProcessRegressor` with the found kernel), and a
test holds both to scikit-learn's own values.

With ``r² = Σⱼ (xⱼ - x'ⱼ)² / lⱼ²`` and ``θ = (log c, log l₁ … log l_d, log s)``::

    K   = c·(1 + √5 r + 5/3 r²)·exp(-√5 r) + (s + α)·I
    ∂K/∂log c  = c·M(r)
    ∂K/∂log lⱼ = c·5/3·(1 + √5 r)·exp(-√5 r)·(xⱼ - x'ⱼ)² / lⱼ²
    ∂K/∂log s  = s·I

and the usual ``log p(y) = -½ yᵀK⁻¹y - Σ log diag(chol K) - n/2 log 2π``, with ``y``
standardised as ``normalize_y=True`` does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize

SQRT5 = math.sqrt(5.0)
ALPHA = 1e-10  # scikit-learn's default jitter on the diagonal


def standardise(y: np.ndarray) -> np.ndarray:
    """``y`` as ``normalize_y=True`` fits it: zero mean, unit std (a constant ``y`` keeps std 1)."""
    std = float(np.std(y))
    return (y - np.mean(y)) / (std if std > 10 * np.finfo(float).eps else 1.0)


def negative_log_likelihood(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``(-log p(y | X, θ), -∇θ)`` for standardised ``y`` (see the module)."""
    c, scales, noise = math.exp(theta[0]), np.exp(theta[1:-1]), math.exp(theta[-1])
    Z = X / scales
    D = (Z[:, None, :] - Z[None, :, :]) ** 2  # (n, n, d): per-axis squared scaled distances
    r = np.sqrt(D.sum(axis=2))
    e = np.exp(-SQRT5 * r)
    M = (1.0 + SQRT5 * r + (5.0 / 3.0) * r * r) * e
    n = len(y)
    K = c * M
    K[np.diag_indices(n)] += noise + ALPHA
    try:
        L = scipy.linalg.cholesky(K, lower=True)
    except np.linalg.LinAlgError:
        return math.inf, np.zeros_like(theta)
    alpha = scipy.linalg.cho_solve((L, True), y)
    lml = -0.5 * float(y @ alpha) - float(np.log(np.diag(L)).sum()) - 0.5 * n * math.log(2 * math.pi)
    inner = np.outer(alpha, alpha) - scipy.linalg.cho_solve((L, True), np.eye(n))
    grad = np.empty(len(theta))
    grad[0] = 0.5 * float(np.sum(inner * (c * M)))
    G = inner * (c * (5.0 / 3.0) * (1.0 + SQRT5 * r) * e)
    grad[1:-1] = 0.5 * np.einsum("ab,abj->j", G, D)
    grad[-1] = 0.5 * noise * float(np.trace(inner))
    return -lml, -grad


def lbfgs(obj_func: Any, initial_theta: np.ndarray, bounds: Any, *, X: np.ndarray, y: np.ndarray,
          max_iter: int) -> tuple[np.ndarray, float]:
    """A ``GaussianProcessRegressor`` optimizer: L-BFGS-B on :func:`negative_log_likelihood`
    of ``(X, y)`` (the points being fitted; scikit-learn's generic ``obj_func`` is not used)."""
    ys = standardise(np.asarray(y, dtype=float))
    result = scipy.optimize.minimize(negative_log_likelihood, initial_theta, args=(X, ys), method="L-BFGS-B",
                                     jac=True, bounds=bounds, options={"maxiter": max_iter})
    return result.x, float(result.fun)


__all__ = ["lbfgs", "negative_log_likelihood", "standardise"]
