"""TESSERA v1.1 model, behind the current GeoTessera int8 products (reference-spec section 4.2).

QAT-style backbones (CellGRU + LayerNorm pooling) with d_model 768, 4 heads, 4 layers, FF 2048;
concat (1536) -> MLP reducer 1536 -> 3072 -> 192. Only the first 128 of the 192 dimensions are
saved. 57,708,738 parameters. Inputs are all valid observations resampled to length bins 8..256;
the normalisation table depends on the data source the checkpoint was trained on (mpc / aws).
"""

from __future__ import annotations

from tessera.models.blocks import CellGruAttentionPool, PixelEncoder, TwoStreamModel, mlp_reducer
from tessera.models.norms import v1_1_table
from tessera.models.spec import InputSpec

__all__ = ["FAMILY", "IGNORED_PREFIXES", "build", "input_spec"]

FAMILY = "v1.1"
IGNORED_PREFIXES = ("projector.", "segmented_matryoshka_projector.")

D_MODEL = 768
OUTPUT_DIM = 192
SAVE_DIM = 128


def build(
    *, d_model: int = D_MODEL, nhead: int = 4, num_layers: int = 4, dim_feedforward: int = 2048
) -> TwoStreamModel:
    """Build the v1.1 inference model; ``forward`` returns ``(B, 192)``.

    The defaults are the released sizes; others serve checkpoints trained by `tessera.train`.
    """

    def backbone(band_num: int) -> PixelEncoder:
        return PixelEncoder(band_num, d_model, nhead, num_layers, dim_feedforward, CellGruAttentionPool(d_model))

    return TwoStreamModel(backbone(10), backbone(2), mlp_reducer(2 * d_model, OUTPUT_DIM, final_norm=False))


def input_spec(source: str) -> InputSpec:
    """v1.1 inputs: the source's norm table, bins 8..256 (zero-observation bin 8), 192-d output saved as 128.

    Args:
        source: Data source of the tiles (see `tessera.models.norms.v1_1_table`).
    """
    table = v1_1_table(source)
    return table.input_spec(
        sampling="bins-v1.1",
        s2_steps=0,
        s1_steps=0,
        bins=tuple(range(8, 257, 8)),
        zero_bin=8,
        output_dim=OUTPUT_DIM,
        save_dim=SAVE_DIM,
        quantisation="v1",
    )
