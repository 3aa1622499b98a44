"""Quadrature rules for integrated gradients, and the completeness check that says how well a rule did.

IG integrates the gradient along the straight path x(α) = r + α (e − r), α in [0, 1]:
attr_i = (e_i − r_i) ∫₀¹ ∂f/∂x_i(x(α)) dα ≈ (e_i − r_i) Σ_s w_s ∂f/∂x_i(x(α_s)).

- `riemann`: α_s = s/m, w_s = 1/m (s = 1..m), the right Riemann sum: its error falls as 1/m, and its last point is
  e itself, so m = 1 is gradient × input;
- `gauss_legendre`: the m Gauss–Legendre nodes of [−1, 1] (`numpy.polynomial.legendre.leggauss`) mapped to [0, 1],
  weights halved; exact when the integrand is a polynomial in α of degree ≤ 2m − 1, so on a smooth path it needs far
  fewer points (Captum's default).

Completeness: Σ_i attr_i → f(e) − f(r) for either rule as m grows; `relative_completeness_gap` measures how far a
finite m is from it, |Σ attr − (f(e) − f(r))| / |f(e) − f(r)| (docs/method.md gives the m the paper configuration
needs).

    alphas, weights = quadrature_points("gauss_legendre", 4)

Run the checks with `python -m pytest tests/test_quadrature.py -q`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

QUADRATURES = ("riemann", "gauss_legendre")


def quadrature_points(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    """(α [m], weights [m]) in float64 of `rule` with m = `steps` points on [0, 1]; the weights sum to 1."""
    if rule not in QUADRATURES:
        raise ValueError(f"quadrature must be one of {QUADRATURES}, got {rule!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "riemann":
        alphas = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        return alphas, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def relative_completeness_gap(total: Tensor, change: Tensor) -> Tensor:
    """|Σ attr − (f(e) − f(r))| / |f(e) − f(r)| per row, from the rows' signed attribution sums and changes [B]
    (inf where f did not change and the sum is not 0, nan where both are 0)."""
    return (total.double() - change.double()).abs() / change.double().abs()
