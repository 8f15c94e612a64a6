"""The Barlow Twins objective (Zbontar et al. 2021) and the projection head it is computed on.

The reference trains its encoders with this loss on "two cloud-free random samples" of a pixel's
time series (reference-spec section 6); it ships no implementation, so this one follows the paper:
standardise each projector output dimension over the batch, form the cross-correlation matrix ``C``
of the two views, and penalise ``Σ_i (1 - C_ii)^2 + λ Σ_{i≠j} C_ij^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BarlowTwinsLoss", "ProjectionHead", "barlow_twins_loss", "cross_correlation"]

_EPS = 1e-5  # BatchNorm1d's epsilon, which the paper's affine-free batch norm uses


class ProjectionHead(nn.Module):
    """``layers`` x [Linear, BatchNorm1d, ReLU] then a Linear: keys ``net.{0,1,3,4,...}`` as the reference's.

    The released v1.0 checkpoint has 5 blocks 16384 wide (reference-spec 3.1); the reference's
    training config says 2048. It is used in training only and dropped from the saved encoder.

    Args:
        in_dim: Encoder output width.
        hidden: Width of the hidden and output layers.
        layers: Number of Linear-BatchNorm-ReLU blocks (0: a single Linear).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        modules.append(nn.Linear(width, hidden))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, hidden)``."""
        return self.net(x)  # type: ignore[no-any-return]


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``(D, D)`` cross-correlation of two ``(N, D)`` views, each dimension standardised over the batch in fp32."""

    def standardise(z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        mean = z.mean(0)
        var = z.var(0, unbiased=False)
        return (z - mean) / torch.sqrt(var + _EPS)

    return standardise(z1).T @ standardise(z2) / z1.shape[0]


@dataclass(frozen=True)
class BarlowTwinsLoss:
    """The loss and its two terms (``loss = invariance + λ * redundancy``)."""

    loss: torch.Tensor
    """Scalar to minimise."""
    invariance: torch.Tensor
    """``Σ_i (1 - C_ii)^2``: the views of a pixel should agree."""
    redundancy: torch.Tensor
    """``Σ_{i≠j} C_ij^2``: the dimensions should be decorrelated (unweighted)."""


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> BarlowTwinsLoss:
    """Barlow Twins loss of two ``(N, D)`` projector outputs of the same N pixels (computed in fp32).

    Args:
        z1: First view.
        z2: Second view.
        lambd: Weight of the off-diagonal term (the reference's ``barlow_lambda``, 5e-3).
    """
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    invariance = (1 - diagonal).pow(2).sum()
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()
    return BarlowTwinsLoss(invariance + lambd * redundancy, invariance, redundancy)
