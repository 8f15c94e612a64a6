"""TESSERA v1.0 "early" float32 model (reference-spec section 3).

Two backbones (S2: 10 bands, S1: 2 bands), each an embedding MLP to d_model 512, the sinusoidal
raw-DOY encoding, 8 post-LN PyTorch encoder layers (8 heads, FF 4096) and ``nn.GRU`` attention
pooling; concat (1024) -> ``dim_reducer`` Linear(1024, 128). 87,841,922 parameters. Inputs are
40 randomly drawn steps per modality (`InputSpec` sampling ``random``).
"""

from __future__ import annotations

from torch import nn

from tessera.models.blocks import GruAttentionPool, PixelEncoder, TwoStreamModel
from tessera.models.norms import V1_0, NormTable
from tessera.models.spec import InputSpec

__all__ = ["FAMILY", "IGNORED_PREFIXES", "build", "input_spec", "random_input_spec"]

FAMILY = "v1.0"
IGNORED_PREFIXES = ("projector.",)
"""Training-only keys of the checkpoint (the 1.3 B-parameter projection head)."""

D_MODEL = 512
OUTPUT_DIM = 128


def build(
    *, d_model: int = D_MODEL, nhead: int = 8, num_layers: int = 8, dim_feedforward: int = 4096, output_dim: int = 128
) -> TwoStreamModel:
    """Build the v1.0 inference model (the defaults are the released checkpoint's sizes).

    The keyword arguments exist for the demo model, which is the same architecture made tiny.

    Returns:
        ``TwoStreamModel`` with state-dict keys ``s2_backbone.*``, ``s1_backbone.*``, ``dim_reducer.0.*``.
    """

    def backbone(band_num: int) -> PixelEncoder:
        return PixelEncoder(band_num, d_model, nhead, num_layers, dim_feedforward, GruAttentionPool(d_model))

    return TwoStreamModel(backbone(10), backbone(2), nn.Sequential(nn.Linear(2 * d_model, output_dim)))


def random_input_spec(table: NormTable, output_dim: int = OUTPUT_DIM, *, empty_orbit_frame: bool = False) -> InputSpec:
    """`InputSpec` of the v1.0-style models: 40 + 40 random steps, v1 int8 rule.

    ``empty_orbit_frame``: the v1.0-QAT dataset's all-zero frame for an orbit without frames
    (`InputSpec.empty_orbit_frame`); v1.0's dataset has none.
    """
    return table.input_spec(
        sampling="random",
        s2_steps=40,
        s1_steps=40,
        output_dim=output_dim,
        save_dim=output_dim,
        quantisation="v1",
        empty_orbit_frame=empty_orbit_frame,
    )


def input_spec() -> InputSpec:
    """How v1.0 inputs are built: v1.0 norms, 40 + 40 random steps, 128-d output, v1 int8 rule."""
    return random_input_spec(V1_0)
