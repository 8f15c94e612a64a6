"""Named exceptions raised by the tessera library.

Every error says what was wrong and how to fix it. The CLI (`tessera.cli`) catches
`TesseraError` once, prints its message and exits with status 2; anything else is a bug.

Each error also subclasses the matching builtin (a bad value is a `ValueError`, a missing product a
`FileNotFoundError`, an unusable remote service a `RuntimeError`), so a caller that does not know
tessera can catch it as the ordinary Python error it is.
"""

from __future__ import annotations

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "ConfigError",
    "DataSourceError",
    "ExportConflictError",
    "GridMismatchError",
    "LabelError",
    "NoSarFramesError",
    "NoScenesError",
    "NoTilesError",
    "PeriodError",
    "ProductsMissingError",
    "ResumeMismatchError",
    "RoiError",
    "ServerError",
    "TesseraError",
    "TileError",
    "TrainingError",
    "TrainingStoppedError",
    "TransportError",
    "UnsupportedProductError",
]


class TesseraError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(TesseraError, ValueError):
    """The configuration is invalid (schema violation, unknown source, bad year...)."""


class RoiError(TesseraError, ValueError):
    """The region of interest cannot be used (missing, unreadable, empty, too large)."""


class GridMismatchError(TesseraError, ValueError):
    """Two rasters that must share a grid do not."""


class DataSourceError(TesseraError, RuntimeError):
    """A data source is misconfigured or returned something unusable."""


class NoScenesError(DataSourceError):
    """A search found no scene where one was required."""


class TransportError(DataSourceError):
    """A network request failed after all retries."""


class TileError(TesseraError, ValueError):
    """A tile directory is missing a file or holds a file of the wrong shape or dtype."""


class CheckpointError(TesseraError, ValueError):
    """A model checkpoint is missing, corrupt or of another architecture."""


class ServerError(TesseraError, RuntimeError):
    """A local server used by the demo or the tests could not be started."""


class PeriodError(ConfigError):
    """``period`` is not a month-day (``MM-DD``) that exists in every year."""


class ProductsMissingError(TesseraError, FileNotFoundError):
    """An export was asked for a year whose stitched products do not exist yet."""


class ExportConflictError(TesseraError, FileExistsError):
    """The export directory already holds a registry or tiles that this export did not write."""


class UnsupportedProductError(TesseraError, ValueError):
    """A product cannot be exported in the requested format (e.g. geotessera reads 128-d embeddings only)."""


class ArchitectureError(TesseraError, ValueError):
    """An architecture name the package does not know (`tessera.models.arch.ARCHITECTURES`)."""


class NoTilesError(TesseraError, FileNotFoundError):
    """No reference-layout tile directory was found for the requested data (years, regions)."""


class TrainingError(TesseraError, ValueError):
    """Training cannot start or resume with these settings (bad value, no usable pixel, incompatible resume)."""


class TrainingStoppedError(TesseraError, RuntimeError):
    """Training stopped at ``max_seconds`` before its last step where a finished model was required."""


class ResumeMismatchError(TrainingError):
    """A resume checkpoint belongs to another run: another architecture, other learned settings or other tiles."""


class LabelError(TesseraError, ValueError):
    """Evaluation labels cannot be used (unreadable, outside the tiles, fewer than two classes)."""


class NoSarFramesError(TesseraError, ValueError):
    """A v1.0 tile without any Sentinel-1 frame under ``model.nodata_policy: reference`` (reference-spec 3.2)."""
