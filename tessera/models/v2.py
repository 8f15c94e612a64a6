"""TESSERA v2 pixel students nano / small / medium / large (reference-spec section 5.1).

Backbones with d_model = 4 x ``latent_dim``, the PyTorch post-LN encoder (or, with
``enable_qk_norm``, `tessera.models.blocks.QKNormEncoderLayer`), and plain attention pooling;
concat -> MLP reducer -> 128 -> non-affine LayerNorm. The sizes come from the checkpoint's
``args``. The output is Matryoshka-ordered: its first 16 / 32 / 64 dimensions are usable on their
own, so the model can return a prefix (``keep_dims``) taken after the final LayerNorm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tessera.errors import CheckpointError
from tessera.models.blocks import AttentionPool, PixelEncoder, TwoStreamModel, mlp_reducer
from tessera.models.norms import V2_STUDENT
from tessera.models.spec import InputSpec

__all__ = ["FAMILY", "IGNORED_PREFIXES", "StudentArgs", "build", "input_spec", "size_name"]

FAMILY = "v2"
IGNORED_PREFIXES: tuple[str, ...] = ()

# Parameter counts the reference README gives per size, in millions (two decimals).
_SIZES_MILLIONS = {"nano": 1.07, "small": 7.11, "medium": 21.03, "large": 43.83}


@dataclass(frozen=True)
class StudentArgs:
    """The architecture hyper-parameters stored in a student checkpoint's ``args``."""

    repr_dim: int = 128
    latent_dim: int = 64
    num_layers: int = 4
    nhead: int = 4
    dim_feedforward: int = 1024
    max_seq_len: int = 256
    matryoshka_dims: tuple[int, ...] = (16, 32, 64, 128)
    enable_qk_norm: bool = False

    @classmethod
    def from_checkpoint(cls, args: Any) -> StudentArgs:
        """Read ``payload["args"]`` (a dict, or an ``argparse.Namespace``), with the reference's defaults.

        Raises:
            CheckpointError: If a value is not a number where one is needed.
        """
        values: Mapping[str, Any] = args if isinstance(args, Mapping) else vars(args)
        defaults = cls()
        try:
            dims = values.get("matryoshka_dims", "16,32,64,128")
            dims_text = dims if isinstance(dims, str) else ",".join(str(d) for d in dims)
            return cls(
                repr_dim=int(values.get("repr_dim", defaults.repr_dim)),
                latent_dim=int(values.get("latent_dim", defaults.latent_dim)),
                num_layers=int(values.get("num_layers", defaults.num_layers)),
                nhead=int(values.get("nhead", defaults.nhead)),
                dim_feedforward=int(values.get("dim_feedforward", defaults.dim_feedforward)),
                max_seq_len=int(values.get("max_seq_len", defaults.max_seq_len)),
                matryoshka_dims=tuple(int(d) for d in dims_text.split(",")),
                enable_qk_norm=bool(values.get("enable_qk_norm", defaults.enable_qk_norm)),
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the v2 checkpoint's 'args' hold a value that is not a number ({exc}); "
                "it must come from the reference's student training (repr_dim, latent_dim, num_layers, ...)"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        """The ``args`` dict as the reference saves it (``matryoshka_dims`` as a comma string)."""
        return {
            "repr_dim": self.repr_dim,
            "latent_dim": self.latent_dim,
            "num_layers": self.num_layers,
            "nhead": self.nhead,
            "dim_feedforward": self.dim_feedforward,
            "max_seq_len": self.max_seq_len,
            "matryoshka_dims": ",".join(str(d) for d in self.matryoshka_dims),
            "enable_qk_norm": self.enable_qk_norm,
        }


def build(args: StudentArgs, keep_dims: int | None = None) -> TwoStreamModel:
    """Build a student.

    Args:
        args: Architecture from the checkpoint.
        keep_dims: Matryoshka prefix to return; None returns all ``repr_dim`` dimensions.
    """
    d_model = 4 * args.latent_dim

    def backbone(band_num: int) -> PixelEncoder:
        return PixelEncoder(
            band_num,
            d_model,
            args.nhead,
            args.num_layers,
            args.dim_feedforward,
            AttentionPool(d_model),
            qk_norm=args.enable_qk_norm,
        )

    reducer = mlp_reducer(2 * d_model, args.repr_dim, final_norm=True)
    return TwoStreamModel(backbone(10), backbone(2), reducer, keep_dims=keep_dims)


def size_name(parameter_count: int) -> str | None:
    """``nano`` ... ``large`` when the count matches a published size to 0.01 M parameters, else None."""
    millions = parameter_count / 1e6
    for name, published in _SIZES_MILLIONS.items():
        if math.isclose(round(millions, 2), published):
            return name
    return None


def input_spec(dimensions: int) -> InputSpec:
    """v2 inputs: student norms, bins 8..256 with bin 0 for no data, ``dimensions``-d output, v2 int8 rule."""
    table = V2_STUDENT
    return table.input_spec(
        sampling="bins-v2",
        s2_steps=0,
        s1_steps=0,
        bins=tuple(range(8, 257, 8)),
        zero_bin=0,
        output_dim=dimensions,
        save_dim=dimensions,
        quantisation="v2",
    )
