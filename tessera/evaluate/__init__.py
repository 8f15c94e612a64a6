"""Probe scores for any checkpoint or product: linear and k-NN probes on labelled pixels, spatially split.

`evaluate` writes a report (Markdown, JSON, confusion-matrix PNG, predictions CSV) comparing the
embeddings with two baselines: the same architecture with random weights, and the raw per-pixel
annual median of the 10 S2 bands.
"""

from __future__ import annotations

from tessera.evaluate.run import EvalSettings, evaluate
from tessera.evaluate.split import Split, spatial_split

__all__ = ["EvalSettings", "Split", "evaluate", "spatial_split"]
