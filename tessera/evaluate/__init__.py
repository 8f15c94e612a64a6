"""Probe scores for any checkpoint or product: linear and k-NN probes on labelled pixels, spatially split.

`evaluate` writes a report (Markdown, JSON, confusion-matrix PNG, predictions CSV) comparing the
embeddings with two baselines: the same architecture with random weights, and the raw per-pixel
annual median of the 10 S2 bands.

The names are imported on first use, so that registering ``tessera evaluate`` with the command line
(which every ``tessera`` job does) does not import PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tessera._lazy import lazy_getattr

if TYPE_CHECKING:
    from tessera.evaluate.run import EvalSettings, evaluate
    from tessera.evaluate.split import Split, spatial_split

_EXPORTS = {
    "EvalSettings": "tessera.evaluate.run",
    "Split": "tessera.evaluate.split",
    "evaluate": "tessera.evaluate.run",
    "spatial_split": "tessera.evaluate.split",
}

__all__ = ["EvalSettings", "Split", "evaluate", "spatial_split"]


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS, name)
