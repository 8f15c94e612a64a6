"""Self-supervised training of TESSERA encoders (Barlow Twins) on the pipeline's own tiles.

`train` runs it; `find_tiles` finds the tile directories of some years under some results
directories; `TrainConfig` holds the settings (``config/train.yaml`` documents each one). The saved
``encoder.pt`` loads with `tessera.models.load` and with the reference's loaders.
"""

from __future__ import annotations

from tessera.train.config import TrainConfig, load_train_config
from tessera.train.data import TileSource, find_tiles
from tessera.train.loop import TrainResult, learning_rate, train
from tessera.train.loss import ProjectionHead, barlow_twins_loss

__all__ = [
    "ProjectionHead",
    "TileSource",
    "TrainConfig",
    "TrainResult",
    "barlow_twins_loss",
    "find_tiles",
    "learning_rate",
    "load_train_config",
    "train",
]
