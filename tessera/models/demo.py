"""A tiny v1.0-style model with seeded random weights, so the pipeline runs without a checkpoint.

Its embeddings are reproducible (same weights on every machine and run) but MEAN NOTHING: it
exists to exercise the plumbing, including the seeded random 40 + 40 step sampler of v1.0.
"""

from __future__ import annotations

import math

import torch

from tessera.models import v1
from tessera.models.blocks import TwoStreamModel
from tessera.models.norms import V1_0
from tessera.models.spec import InputSpec

__all__ = ["FAMILY", "SEED", "build", "input_spec"]

FAMILY = "demo"
SEED = 20250427
"""Seed of the demo weights (any fixed value; changing it changes every demo embedding)."""


def build(seed: int = SEED) -> TwoStreamModel:
    """Build the demo model: d_model 64 (latent 16), 2 layers, 2 heads, FF 64, nn.GRU pooling, 128-d output.

    Weights are drawn from a private generator, uniform in ``±1/sqrt(fan_in)`` for matrices and
    vectors of a layer, ones / zeros for LayerNorm gains / shifts, so they do not depend on (or
    disturb) the global torch RNG.
    """
    with torch.random.fork_rng(devices=[]):
        model = v1.build(d_model=64, nhead=2, num_layers=2, dim_feedforward=64)
    generator = torch.Generator().manual_seed(seed)
    fan_in = 1
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".norm" in name or "layer_norm" in name:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            if param.dim() >= 2:
                fan_in = param.shape[1]
            # vectors follow the matrix before them in registration order (bias after weight)
            bound = 1.0 / math.sqrt(fan_in)
            param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
    return model


def input_spec() -> InputSpec:
    """v1.0 inputs (norms, 40 + 40 seeded random steps), 128-d output, v1 int8 rule.

    With the v1.0-QAT dataset's empty-orbit frame, so that the plumbing model embeds a tile without
    any S1 frame rather than fail on it as v1.0 does.
    """
    return v1.random_input_spec(V1_0, empty_orbit_frame=True)
