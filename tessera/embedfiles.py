"""Per-tile embedding files: what an inference job writes for each tile, and how stitching finds it.

For tile ``x0_y0_x1_y1`` of an inference job's directory (`tessera.results.Results.embeddings`):

* ``<tile>.npy``: int8 codes ``(h, w, D)``, or float32 ``(h, w, D)``, covering the tile's real pixels
  (``h = y1 - y0``, ``w = x1 - x0``; no padding);
* ``<tile>_scales.npy`` (int8 only): float32 ``(h, w)`` per-pixel scales, value = code x scale;
* ``<tile>.json``: the sidecar: the model, checkpoint, settings and device that made the tile, the
  nodata policy, and its pixel counts per class. It is written last, so a tile whose sidecar exists
  is complete.

Nodata is encoded as the reference writes a pixel it did not embed, for every family
(`tessera.nodata`): an all-zero float32 vector, or code 0 with scale 0 (a real pixel's scale is
never 0). The stitched products declare their own nodata instead (`tessera.products`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import tessera
from tessera.config import ModelConfig
from tessera.errors import TileError
from tessera.io import save_npy_atomic, write_json_atomic
from tessera.nodata import encode_nodata_float32, encode_nodata_int8

if TYPE_CHECKING:  # the readers (stitch, QA) run without PyTorch; only the writer needs it
    from tessera.infer import InferenceResult
    from tessera.models.spec import LoadedModel

__all__ = ["TileFiles", "read_sidecar", "tile_files", "write_tile_embeddings"]


@dataclass(frozen=True)
class TileFiles:
    """The files of one tile's embeddings."""

    data: Path
    """``<tile>.npy``."""
    scales: Path | None
    """``<tile>_scales.npy`` for int8 output, else None."""
    meta: Path
    """``<tile>.json``."""


def tile_files(directory: Path, tile: str, int8: bool) -> TileFiles:
    """Where tile ``tile``'s embedding files are in an inference job's ``directory``."""
    return TileFiles(
        directory / f"{tile}.npy", directory / f"{tile}_scales.npy" if int8 else None, directory / f"{tile}.json"
    )


def write_tile_embeddings(
    files: TileFiles, result: InferenceResult, model: LoadedModel, mcfg: ModelConfig, year: int, batch_size: int | None
) -> None:
    """Write one tile's embeddings (quantised for int8 output) and, last, its sidecar."""
    import torch

    from tessera.quantize import quantize

    if files.scales is not None:
        flat = result.embeddings.reshape(-1, result.embeddings.shape[-1])
        keep = result.valid.ravel()
        q = np.zeros(flat.shape, np.int8)
        scales = np.zeros(flat.shape[0], np.float32)
        if keep.any():
            qv, sv = quantize(torch.from_numpy(flat[keep]), model.spec.quantisation)
            q[keep], scales[keep] = qv.numpy(), sv.numpy()
        shape = result.embeddings.shape
        codes, sc = encode_nodata_int8(q.reshape(shape), scales.reshape(shape[:-1]), result.valid)
        save_npy_atomic(files.data, codes)
        save_npy_atomic(files.scales, sc)
    else:
        save_npy_atomic(files.data, encode_nodata_float32(result.embeddings, result.valid))
    n_valid = int(result.valid.sum())
    write_json_atomic(
        files.meta,
        {
            "model_family": model.family,
            "checkpoint_sha256": model.checkpoint_sha256,
            "checkpoint": Path(mcfg.checkpoint).name if mcfg.checkpoint else None,
            "random_weights": model.random_weights,
            "dimensions": int(result.embeddings.shape[-1]),
            "output": mcfg.output,
            "precision": result.precision,
            "device": result.device,
            "batch_size": batch_size,
            "repeats": mcfg.repeats,
            "pipeline_version": tessera.__version__,
            "year": year,
            "nodata_policy": result.nodata_policy,
            "nodata_encoding": "code 0, scale 0" if files.scales is not None else "all-zero vector",
            "valid_pixels": n_valid,
            "nodata_pixels": int(result.valid.size) - n_valid,
            "nodata_reasons": {
                "outside_roi": result.outside_roi,
                "no_valid_observation": result.no_valid_observation,
            },
            "pixel_classes": result.pixel_classes,
        },
    )


def read_sidecar(path: Path) -> dict[str, Any]:
    """A tile's sidecar; `TileError` if it is missing or unreadable."""
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TileError(f"cannot read the tile sidecar {path}: {exc}; rerun the tile's infer job") from exc
    return meta
