"""TESSERA v1.0-QAT model, the checkpoint behind the v1 GeoTessera int8 products (reference-spec 4.1).

As v1.0 but 4 layers and 4 heads per backbone, and pooling scores from the hand-written GRU
(`tessera.models.blocks.CellGRU`) followed by a LayerNorm. 45,828,226 parameters. Inputs and
normalisation are those of v1.0, except that its dataset gives an orbit without frames one all-zero
frame on day 180 (`tessera.models.spec.InputSpec.empty_orbit_frame`).
"""

from __future__ import annotations

from torch import nn

from tessera.models.blocks import CellGruAttentionPool, PixelEncoder, TwoStreamModel
from tessera.models.norms import V1_0
from tessera.models.spec import InputSpec
from tessera.models.v1 import random_input_spec

__all__ = ["FAMILY", "IGNORED_PREFIXES", "build", "input_spec"]

FAMILY = "v1.0-qat"
IGNORED_PREFIXES = ("projector.",)

D_MODEL = 512


def build(
    *, d_model: int = D_MODEL, nhead: int = 4, num_layers: int = 4, dim_feedforward: int = 4096
) -> TwoStreamModel:
    """Build the v1.0-QAT inference model (defaults: d_model 512, 4 heads, 4 layers, FF 4096, Linear(1024, 128)).

    Other sizes serve checkpoints trained by `tessera.train` (their ``arch`` entry names them).
    """

    def backbone(band_num: int) -> PixelEncoder:
        return PixelEncoder(band_num, d_model, nhead, num_layers, dim_feedforward, CellGruAttentionPool(d_model))

    return TwoStreamModel(backbone(10), backbone(2), nn.Sequential(nn.Linear(2 * d_model, 128)))


def input_spec() -> InputSpec:
    """As v1.0 (v1.0 norms, 40 + 40 random steps, 128-d output, v1 int8 rule), plus the empty-orbit frame."""
    return random_input_spec(V1_0, empty_orbit_frame=True)
