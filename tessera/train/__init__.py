"""Self-supervised training of TESSERA encoders (Barlow Twins) on the pipeline's own tiles.

`train` runs it; `find_tiles` finds the tile directories of some years under some results
directories; `TrainConfig` holds the settings (``config/train.yaml`` documents each one). The saved
``encoder.pt`` loads with `tessera.models.load` and with the reference's loaders.

The names are imported on first use, so that registering ``tessera train`` with the command line
(which every ``tessera`` job does) does not import PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tessera._lazy import lazy_getattr

if TYPE_CHECKING:
    from tessera.train.config import TrainConfig, load_train_config
    from tessera.train.data import TileSource, find_tiles
    from tessera.train.loop import TrainResult, learning_rate, train
    from tessera.train.loss import ProjectionHead, barlow_twins_loss

_EXPORTS = {
    "ProjectionHead": "tessera.train.loss",
    "TileSource": "tessera.train.data",
    "TrainConfig": "tessera.train.config",
    "TrainResult": "tessera.train.loop",
    "barlow_twins_loss": "tessera.train.loss",
    "find_tiles": "tessera.train.data",
    "learning_rate": "tessera.train.loop",
    "load_train_config": "tessera.train.config",
    "train": "tessera.train.loop",
}

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


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS, name)
