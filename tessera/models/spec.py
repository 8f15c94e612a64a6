"""What a model needs from a tile: the contract between `tessera.models` and `tessera.infer`.

`tessera.models.load` returns a `LoadedModel`; `tessera.infer` turns tile arrays into the
model's input tensors by following its `InputSpec` alone, so adding a model family never
touches the inference loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["InputSpec", "LoadedModel"]


@dataclass(frozen=True)
class InputSpec:
    """How per-pixel sequences are built for a model family (reference-spec sections 3.2, 4.2, 5.1)."""

    sampling: Literal["random", "bins-v1.1", "bins-v2"]
    """``random``: v1.0 / v1.0-QAT fixed-length random draws (seeded per pixel in our pipeline);
    ``bins-v1.1``/``bins-v2``: deterministic all-observation sequences resampled to a length bin."""
    s2_steps: int
    """Sequence length for ``random`` sampling (40 for v1.0); unused by the bin samplers."""
    s1_steps: int
    """As `s2_steps`, for Sentinel-1."""
    s2_mean: tuple[float, ...]
    """Per-band S2 mean in ``bands.npy`` order (10 values)."""
    s2_std: tuple[float, ...]
    """Per-band S2 standard deviation (10 values); inputs become ``(x - mean) / (std + 1e-9)``."""
    s1a_mean: tuple[float, ...]
    """[VV, VH] mean for ascending frames (v1.0: the single S1 table)."""
    s1a_std: tuple[float, ...]
    """[VV, VH] std for ascending frames."""
    s1d_mean: tuple[float, ...]
    """[VV, VH] mean for descending frames (v1.0: same as ascending)."""
    s1d_std: tuple[float, ...]
    """[VV, VH] std for descending frames."""
    bins: tuple[int, ...] = tuple(range(8, 257, 8))
    """Length bins of the bin samplers."""
    zero_bin: int = 8
    """Bin used when a modality has no valid observation (v1.1: 8; v2: 0 = fed a length-1 zero sequence)."""
    output_dim: int = 128
    """Width of the model's forward output (v1.1: 192; only the first `save_dim` are kept)."""
    save_dim: int = 128
    """Dimensions written to the product."""
    quantisation: Literal["v1", "v2"] = "v1"
    """int8 rule: v1 ``scale = max(max|x|/127, 1e-8)``, clamp [-128, 127];
    v2 ``scale = max(max|x|, 1e-12)/127``, clip +-127."""
    empty_orbit_frame: bool = False
    """``random`` sampler with the reference's fallback: an orbit without any frame contributes one
    all-zero frame on day 180 (the v1.0-QAT dataset, reference-spec 4.1). Without it the S1 fallback
    draws from the other orbit's frames alone, and a tile without any S1 frame cannot be embedded
    (the v1.0 dataset, reference-spec 3.2)."""


@dataclass
class LoadedModel:
    """A model ready for inference."""

    module: torch.nn.Module
    """``forward(s2, s1) -> (B, output_dim)``; s2 ``(B, T, 11)`` = 10 standardised bands + raw DOY,
    s1 ``(B, T, 3)`` = [VV, VH] standardised + raw DOY."""
    family: str
    """``v1.0``, ``v1.0-qat``, ``v1.1``, ``v2-nano`` ... ``v2-large`` or ``demo``."""
    spec: InputSpec
    """How to build its inputs."""
    checkpoint_sha256: str | None
    """sha256 of the checkpoint file; None for the seeded random demo model."""
    random_weights: bool = False
    """True for the demo model with seeded random weights: its embeddings carry no meaning."""
    architecture: dict[str, Any] | None = None
    """Its sizes (`tessera.models.arch.Architecture.to_dict`), e.g. to build the same model with random weights."""
